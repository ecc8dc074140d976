"""A stand-in for the `vllm` package, with the class, method and attribute names rollout.py uses from the
real one (LLM, SamplingParams, RequestOutput-like results, llm_engine...model_runner.model.load_weights,
reset_prefix_cache, sleep, wake_up). Generation is real: a transformers model loaded from the same path
samples the tokens, so train.py runs end to end through the vLLM code path on CPU."""
from types import SimpleNamespace

import torch

from rollout import TransformersEngine, expand_image_tokens, load_model


class SamplingParams:
    def __init__(self, **kwargs):
        self.__dict__.update(kwargs)


class Logprob:
    def __init__(self, logprob):
        self.logprob = logprob


class _Model:
    """The engine's own copy of the weights; load_weights copies the trainer's in (unless told to fail)."""

    def __init__(self, llm):
        self.llm, self.loads = llm, []

    def named_parameters(self):
        return self.llm.model.named_parameters()

    def load_weights(self, weights):
        """As vLLM's: loads the names it knows, skips the others without a word, returns the names loaded."""
        weights = list(weights)
        self.loads.append([name for name, _ in weights])
        own = dict(self.llm.model.named_parameters())
        if self.llm.ignore_weights:  # True simulates a silent sync failure that still claims success
            return {name for name, _ in weights if name in own}
        loaded = set()
        with torch.no_grad():
            for name, tensor in weights:
                if name in own:
                    own[name].copy_(tensor)
                    loaded.add(name)
        return loaded


class LLM:
    instances = []
    ignore_weights = False

    def __init__(self, model, **kwargs):
        self.kwargs, self.events = kwargs, []
        self.model, self.tokenizer = load_model(model)
        self.model.eval()
        runner = SimpleNamespace(model=_Model(self))
        self.llm_engine = SimpleNamespace(model_executor=SimpleNamespace(
            driver_worker=SimpleNamespace(worker=SimpleNamespace(model_runner=runner))))
        LLM.instances.append(self)

    def reset_prefix_cache(self):
        self.events.append("reset_prefix_cache")

    def sleep(self, level=1):
        self.events.append(f"sleep{level}")

    def wake_up(self):
        self.events.append("wake_up")

    def generate(self, requests, sampling_params, use_tqdm=True):
        sp = sampling_params
        self.events.append("generate")
        engine = TransformersEngine(self.model, self.tokenizer)
        for r in requests:  # a text prompt with images: expanded here, as vLLM's multi-modal processor does
            if "multi_modal_data" in r:
                r["vision"] = dict(self.tokenizer.image_processor(images=r["multi_modal_data"]["image"],
                                                                  return_tensors="pt"))
                ids = self.tokenizer(r["prompt"], add_special_tokens=False)["input_ids"]
                r["prompt_token_ids"] = expand_image_tokens(self.tokenizer, ids, r["vision"])
        ids = [r["prompt_token_ids"] for r in requests for _ in range(sp.n)]
        rows = engine._generate_rows(ids, sp.max_tokens, sp.temperature, sp.top_p, max(sp.top_k, 0), sp.min_p,
                                     sp.presence_penalty, sp.repetition_penalty,
                                     vision=[r.get("vision") for r in requests for _ in range(sp.n)])
        outputs = []
        for i, request in enumerate(requests):
            completions = [SimpleNamespace(text=r.text, token_ids=tuple(r.token_ids),
                                           logprobs=[{t: Logprob(lp)} for t, lp in zip(r.token_ids, r.logprobs)],
                                           finish_reason="length" if r.finish_reason == "length" else "stop")
                           for r in rows[i * sp.n:(i + 1) * sp.n]]
            outputs.append(SimpleNamespace(prompt_token_ids=list(request["prompt_token_ids"]), outputs=completions))
        return outputs
