"""What the paper's GPU setting needs, checked on CPU: FSDP's wrap classes, explicit sampling fields, the
vLLM weight-name mapping and its loud failure."""
import sys

import pytest
import torch
from transformers import Qwen3_5Config, Qwen3_5ForConditionalGeneration

import models
from engines.transformers_engine import TransformersEngine
from models import load_model
from rollout import checkpoint_names_for


def tiny_vlm():
    """A vision-language Qwen3.5 of a few hundred thousand parameters (2 text layers, 2 vision blocks)."""
    text = dict(vocab_size=400, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                layer_types=["linear_attention", "full_attention"], num_attention_heads=2,
                num_key_value_heads=1, head_dim=32, linear_num_key_heads=2, linear_num_value_heads=2,
                linear_key_head_dim=16, linear_value_head_dim=16, tie_word_embeddings=True)
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                  num_position_embeddings=64)
    return Qwen3_5ForConditionalGeneration(Qwen3_5Config(text_config=text, vision_config=vision,
                                                         tie_word_embeddings=True))


def test_fsdp_units_are_the_text_blocks(tiny_model):
    model, _ = load_model(tiny_model)
    assert "Qwen3_5VisionBlock" in model._no_split_modules  # listed, yet absent in the text class
    assert [type(m).__name__ for m in models.decoder_layers(model)] == ["Qwen3_5DecoderLayer"] * 2
    vlm = tiny_vlm()  # its vision blocks stay out: the tower is the root's (image data) or one unit (text)
    assert [type(m).__name__ for m in models.decoder_layers(vlm)] == ["Qwen3_5DecoderLayer"] * 2
    assert models.vision_tower(vlm) is vlm.model.visual and models.vision_tower(model) is None
    model._no_split_modules = ["NoSuchBlock"]
    with pytest.raises(ValueError, match="none of its _no_split_modules"):
        models.decoder_layers(model)


def test_the_memory_check_stops_layouts_that_cannot_fit_a_gpu():
    """The check train.py runs on a GPU before anything loads (config.memory_problems), with the paper's
    sizes on an 80 GiB GPU: a 27B bf16 teacher does not fit its 0.4 share, its FP8 checkpoint does; a 9B
    student's AdamW state does not fit one GPU, it does as an FSDP shard over 8."""
    from config import parse_config
    from device import memory_problems

    gpu = 80 * 2 ** 30
    cfg = parse_config(["--teacher", "Qwen3.5-27B", "--engine", "vllm"])
    problems, _ = memory_problems(cfg, gpu, 1, (0.8e9, 2), (27e9, 2), fsdp=False)
    assert len(problems) == 1 and "teacher's weights (50.3 GiB)" in problems[0]
    assert memory_problems(cfg, gpu, 1, (0.8e9, 2), (27e9, 1), fsdp=False)[0] == []  # FP8: 1 byte a weight
    solo = parse_config(["--teacher", "gold", "--engine", "vllm"])
    problems, plan = memory_problems(solo, gpu, 1, (9e9, 2), None, fsdp=False)
    assert "needs 158.1 GiB" in problems[0]
    assert plan["trainer (fp32 weights, gradients, AdamW)"] == 16 * 9e9
    assert memory_problems(solo, gpu, 8, (9e9, 2), None, fsdp=True)[0] == []
    assert memory_problems(solo, gpu, 8, (9e9, 2), None, fsdp=False)[0]  # DDP: every rank holds it all


def test_a_checkpoint_s_generation_defaults_never_reach_sampling(tiny_model, tmp_path, monkeypatch):
    """A checkpoint that ships min-p 0.1, repetition penalty 1.05, top-k 5 and temperature 0.2: the engine
    samples with exactly the arguments it was given, in training, teacher, judge and eval alike."""
    model, tok = load_model(tiny_model)
    model.generation_config.update(min_p=0.1, repetition_penalty=1.05, top_k=5, temperature=0.2, top_p=0.5,
                                   do_sample=True, no_repeat_ngram_size=2)
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    model, tok = load_model(str(tmp_path / "m"))
    assert model.generation_config.repetition_penalty == 1.05  # the defaults are really in the checkpoint
    used = []
    real = model._prepare_generation_config

    def spy(*args, **kwargs):
        config, kw = real(*args, **kwargs)
        used.append(config)
        return config, kw

    monkeypatch.setattr(model, "_prepare_generation_config", spy)
    engine = TransformersEngine(model, tok)
    engine.generate(["What is 1 + 2?"], n=2, max_new_tokens=4, temperature=1.0, top_p=1.0, top_k=0)
    engine.generate(["What is 1 + 2?"], n=1, max_new_tokens=4, temperature=0.0)  # greedy (judge, eval)
    sampled, greedy = used
    # a sampled call draws in the engine's own processors (test_train: their distribution); generate's
    # config stays blank, so none of the checkpoint's warpers or penalties is added
    assert not sampled.do_sample and sampled.temperature != 0.2
    assert sampled.top_k != 5 and sampled.top_p != 0.5
    assert not sampled.min_p and sampled.repetition_penalty == 1.0 and not sampled.no_repeat_ngram_size
    assert not greedy.do_sample and greedy.repetition_penalty == 1.0 and not greedy.no_repeat_ngram_size
    assert model.generation_config.repetition_penalty == 1.05  # the model's own config is left as it was
    # the engine's log-probs are those of plain softmax(logits / T): the trainer's recomputation agrees
    from logprobs import response_logprobs
    from zppo import Episode
    (group,) = engine.generate(["Hi"], n=2, max_new_tokens=6, temperature=1.0)
    with torch.no_grad():
        lp, _mask, _ = response_logprobs(model, [Episode(r.prompt_ids, r.token_ids) for r in group], 1.0,
                                         tok.pad_token_id)
    for b, r in enumerate(group):
        assert torch.allclose(lp[b, :len(r.token_ids)], torch.tensor(r.logprobs), atol=1e-4)


def test_weight_names_follow_the_checkpoint_vllm_loaded():
    text_names = ["model.embed_tokens.weight", "model.layers.0.mlp.up_proj.weight", "model.norm.weight",
                  "lm_head.weight"]
    # a text checkpoint: names as they are; the tied head (absent from the file) keeps its name: vLLM's
    # in-place reload restores the head as a layer of its own and must be given its weights
    assert checkpoint_names_for(text_names, set(text_names[:3])) == {n: n for n in text_names}
    # the vision-language checkpoint of Qwen3.5 (what vLLM loads) nests the text model one level down
    vlm = {"model.language_model.embed_tokens.weight", "model.language_model.layers.0.mlp.up_proj.weight",
           "model.language_model.norm.weight", "model.visual.blocks.0.attn.qkv.weight"}
    assert checkpoint_names_for(text_names, vlm) == {
        "model.embed_tokens.weight": "model.language_model.embed_tokens.weight",
        "model.layers.0.mlp.up_proj.weight": "model.language_model.layers.0.mlp.up_proj.weight",
        "model.norm.weight": "model.language_model.norm.weight", "lm_head.weight": "lm_head.weight"}
    with pytest.raises(RuntimeError, match=r"'model.layers.1.extra.weight' has no counterpart"):
        checkpoint_names_for(["model.layers.1.extra.weight"], vlm)


def run_bench(tmp_path, *args):
    import os
    import subprocess

    from conftest import ROOT

    res = subprocess.run([sys.executable, "scripts/bench_gpu.py", "--tiny", "--cpu", "--work", str(tmp_path),
                          *args],
                         cwd=ROOT, capture_output=True, text=True, timeout=900,
                         env={**os.environ, "OMP_NUM_THREADS": "2"}, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout


def test_gpu_benchmark_table_runs_on_a_tiny_model(tmp_path):
    out = run_bench(tmp_path, "--skip-smoke", "--micro", "1,2", "--lengths", "16,32", "--budget-s", "60")
    rows = [line for line in out.splitlines() if line.startswith(("| 1 |", "| 2 |"))]
    assert len(rows) == 4 and all(float(r.split("|")[4].replace(",", "")) > 0 for r in rows)  # tokens/s


@pytest.mark.slow
def test_gpu_smoke_script_runs_end_to_end_on_a_tiny_model(tmp_path):
    out = run_bench(tmp_path, "--skip-table")
    assert out.count(": ok (") == 3 and "FAILED" not in out  # train, resume, eval
    assert "step 3: acc/plain" in out


FSDP_PROBE = """
import os, sys, torch
sys.path.insert(0, {root!r})
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT={port!r}, RANK="0", LOCAL_RANK="0", WORLD_SIZE="1")
from torch.distributed.fsdp import FSDPModule
import models
from models import load_model, unsharded
from engines.transformers_engine import TransformersEngine
from logprobs import response_logprobs
from zppo import Episode
model, tok = load_model({model!r})
model = models.shard(model, "no", images=False)  # a world of one: shard() starts it (gloo)
engine = TransformersEngine(model, tok, context=lambda: unsharded(model))  # before the root's first forward
(group,) = engine.generate(["What is 1 + 1?"], n=2, max_new_tokens=6, temperature=1.0)
lp, mask, _ = response_logprobs(model, [Episode(r.prompt_ids, r.token_ids) for r in group], 1.0, tok.pad_token_id)
gap = max((lp[b, :len(r.logprobs)] - torch.tensor(r.logprobs)).abs().max().item() for b, r in enumerate(group))
(lp * mask).sum().backward()
grads = sum(p.grad is not None and bool(p.grad.to_local().abs().sum() > 0) for p in model.parameters())
print("gap", gap, "units", sum(isinstance(m, FSDPModule) for m in model.modules()), "grads", grads)
"""  # noqa: E501 (the script run in the subprocess, verbatim)


def test_fsdp_generates_before_the_first_forward_and_the_chunked_head_trains_under_it(tiny_model):
    """FSDP2 (one CPU process, gloo) with a unit per decoder layer: the engine generates with every unit
    gathered, the chunked head runs inside the sharded forward, and the gradients reach the parameters."""
    import socket
    import subprocess

    from conftest import ROOT

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    res = subprocess.run([sys.executable, "-c", FSDP_PROBE.format(root=ROOT, port=port, model=tiny_model)],
                         capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    words = res.stdout.split()
    assert float(words[words.index("gap") + 1]) < 1e-4  # engine and trainer agree under FSDP
    assert int(words[words.index("units") + 1]) == 3  # the root and one unit per decoder layer
    assert int(words[words.index("grads") + 1]) > 0


def test_gpu_check_script_runs_its_stages_on_cpu(tmp_path):
    """scripts/gpu_check.py, the short script for a lent GPU, on CPU with tiny models: FSDP keeps RoPE's
    buffers in fp32 under bf16, and train.py --fsdp runs 3 steps with a sync gap per step (the vLLM stage runs
    where vLLM is installed: CI's vLLM environment)."""
    import subprocess

    from conftest import ROOT

    res = subprocess.run([sys.executable, "scripts/gpu_check.py", "--cpu", "--tiny", "--work", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)
    assert res.returncode == 0 and "FAILED" not in res.stdout, res.stdout[-3000:] + res.stderr[-3000:]
    assert "inv_freq inside the forward: torch.float32" in res.stdout
    assert res.stdout.count("sync gap") == 3
