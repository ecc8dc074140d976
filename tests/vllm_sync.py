"""The real vLLM engine against the trainer, run as a script by test_vllm_real.py: vLLM initialises
torch.distributed (and its launcher's variables) in its own process, which must not be the test runner's.

    python tests/vllm_sync.py MODEL [--sleep]   # prints one line: RESULT {json}; --sleep: GPU only

Samples with the project's VLLMEngine (fp32, as the CPU trainer), recomputes every token's log-prob with the
trainer's own pass (logprobs.response_logprobs), then perturbs the trainer's weights and measures the gap
before and after sync_weights (recording whether vLLM's current config was set inside each reload), sends a
batch with one prompt too long for the engine's context, and finally pushes a state dict with one tensor
missing, which must be refused.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch

from logprobs import response_logprobs
from models import load_model
from rollout import VLLMEngine
from zppo import Episode

PROMPTS = ["What is 3 + 4?", "Hi", "The answer is \\boxed{7}."]


def gap(engine, model, tokenizer):
    """(max, mean) |engine log-prob - trainer log-prob| per sampled token, and the token count."""
    groups = engine.generate(PROMPTS, n=4, max_new_tokens=16, temperature=1.0)
    seqs = [Episode(r.prompt_ids, r.token_ids, engine_logprobs=r.logprobs) for g in groups for r in g]
    with torch.no_grad():
        lp, _, _ = response_logprobs(model, seqs, 1.0, tokenizer.pad_token_id)
    diffs = [abs(a - b) for s, row in zip(seqs, lp)
             for a, b in zip(s.engine_logprobs, row[:len(s.token_ids)].tolist())]
    return {"max": max(diffs), "mean": sum(diffs) / len(diffs), "tokens": len(diffs)}


def main(path, sleep=False):
    from vllm.config import get_current_vllm_config_or_none

    model, tokenizer = load_model(path, device="cuda" if torch.cuda.is_available() else "cpu")
    model.eval()
    engine = VLLMEngine(path, tokenizer, gpu_memory_utilization=0.15, max_model_len=512, seed=0,
                        dtype="float32", sleep=sleep)
    out = {"fresh": gap(engine, model, tokenizer), "spot": sorted(engine.spot), "config_set": []}
    vllm_model = type(engine._model())
    loads = vllm_model.load_weights

    def spy(self, weights):  # what vLLM's model code sees during a reload
        out["config_set"].append(get_current_vllm_config_or_none() is not None)
        return loads(self, weights)

    vllm_model.load_weights = spy
    with torch.no_grad():  # a large update: the engine's old weights give clearly other log-probs
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    out["stale"] = gap(engine, model, tokenizer)
    engine.sync_weights(model)
    out["synced"] = gap(engine, model, tokenizer)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    engine.sync_weights(model)
    out["synced_again"] = gap(engine, model, tokenizer)
    # a response prefix (the Prefix baseline): part of the prompt, the text the whole turn,
    # log-probs the trainer's
    prefix = tokenizer("The answer is", add_special_tokens=False)["input_ids"]
    (group,) = engine.generate([PROMPTS[0]], n=4, max_new_tokens=8, temperature=1.0,
                               response_prefixes=[prefix])
    seqs = [Episode(r.prompt_ids, r.token_ids, engine_logprobs=r.logprobs) for r in group]
    with torch.no_grad():
        lp, _, _ = response_logprobs(model, seqs, 1.0, tokenizer.pad_token_id)
    out["prefix"] = {
        "prompt_ends_with_prefix": all(r.prompt_ids[-len(prefix):] == prefix for r in group),
        "text_starts_with_prefix": all(r.text.startswith("The answer is") for r in group),
        "max": max(abs(a - b) for s, row in zip(seqs, lp) for a, b in zip(s.engine_logprobs, row.tolist()))}
    groups = engine.generate(["Hi", "What is 3 + 4? " * 80, "Hi"], n=2, max_new_tokens=8)
    out["too_long"] = {"sizes": [len(g) for g in groups], "count": engine.too_long}
    state = {k: v for k, v in model.state_dict().items() if k != "model.layers.1.mlp.down_proj.weight"}
    try:
        engine.sync_weights(model, state)
        out["broken"] = None
    except RuntimeError as e:
        out["broken"] = str(e)
    print("RESULT " + json.dumps(out), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sleep="--sleep" in sys.argv[2:])
