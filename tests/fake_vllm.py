"""A stand-in for the `vllm` package, for the parts of rollout.VLLMEngine that vLLM's CPU build cannot run:
sleep mode (not on CPU) and Qwen3.5's vision-language class (vLLM's module needs a torchvision, and PyPI has
no CPU one). Everything else runs against the real vLLM (tests/test_vllm_real.py). It has the class, method
and attribute names rollout.py uses from the real one (LLM, SamplingParams, RequestOutput-like results,
llm_engine...model_runner.get_model / reload_weights, reset_prefix_cache, sleep, wake_up). Generation is
real: a transformers model loaded from the same path samples the tokens."""
from types import SimpleNamespace
from typing import ClassVar

import torch

from engines.transformers_engine import TransformersEngine
from models import load_model
from rollout import expand_image_tokens


class SamplingParams:
    def __init__(self, **kwargs):
        self.__dict__.update(kwargs)


class Logprob:
    def __init__(self, logprob):
        self.logprob = logprob


class _Model:
    """The engine's own copy of the weights; load_weights copies the trainer's in."""

    def __init__(self, llm):
        self.llm, self.loads = llm, []

    def named_parameters(self):
        return self.llm.model.named_parameters()

    def load_weights(self, weights):
        """As vLLM's: loads the names it knows, skips the others without a word, returns the names loaded."""
        weights = list(weights)
        self.loads.append([name for name, _ in weights])
        own = dict(self.llm.model.named_parameters())
        loaded = set()
        with torch.no_grad():
            for name, tensor in weights:
                if name in own:
                    own[name].copy_(tensor)
                    loaded.add(name)
        return loaded


class LLM:
    instances: ClassVar[list] = []

    def __init__(self, model, **kwargs):
        self.kwargs, self.events = kwargs, []
        self.model, self.tokenizer = load_model(model)
        self.model.eval()
        model = _Model(self)

        # vLLM's: calls load_weights, returns None
        def reload_weights(weights_iterator, is_checkpoint_format=True):
            model.load_weights(weights_iterator)

        runner = SimpleNamespace(model=model, get_model=lambda: model, reload_weights=reload_weights)
        self.llm_engine = SimpleNamespace(
            model_executor=SimpleNamespace(driver_worker=SimpleNamespace(worker=SimpleNamespace(
                model_runner=runner))),
            model_config=SimpleNamespace(dtype=next(self.model.parameters()).dtype,
                                         max_model_len=kwargs.get("max_model_len")
                                         or self.model.config.get_text_config().max_position_embeddings),
            engine_core=SimpleNamespace(shutdown=lambda: self.events.append("shutdown")))
        LLM.instances.append(self)

    def collective_rpc(self, method, kwargs=None):
        """vLLM's entry point to the worker (which sets its current config around the call)."""
        self.events.append(f"rpc:{method}")
        runner = self.llm_engine.model_executor.driver_worker.worker.model_runner
        return [getattr(runner, method)(**(kwargs or {}))]

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
        prompts, visions = [], []
        for r in requests:  # one placeholder per image, expanded here as vLLM's multi-modal processor does
            vision = None
            if "multi_modal_data" in r:
                vision = dict(self.tokenizer.image_processor(images=r["multi_modal_data"]["image"],
                                                             return_tensors="pt"))
            prompts.append(r["prompt_token_ids"] if vision is None else
                           expand_image_tokens(self.tokenizer, r["prompt_token_ids"], vision))
            visions.append(vision)
        rows = engine._generate_rows(prompts, sp.n, sp.max_tokens, sp.temperature, sp.top_p, max(sp.top_k, 0),
                                     sp.presence_penalty, vision=visions)  # a prompt's n rows together
        outputs = []
        for i, prompt in enumerate(prompts):
            completions = [SimpleNamespace(text=r.text, token_ids=tuple(r.token_ids),
                                           logprobs=[{t: Logprob(lp)}
                                                     for t, lp in zip(r.token_ids, r.logprobs)],
                                           finish_reason="length" if r.finish_reason == "length" else "stop")
                           for r in rows[i * sp.n:(i + 1) * sp.n]]
            outputs.append(SimpleNamespace(prompt_token_ids=list(prompt), outputs=completions))
        return outputs
