"""VLLMEngine against the stand-in `vllm` module (tests/fake_vllm.py), only for what vLLM's CPU build cannot
run: sleep mode (refused on CPU: "Sleep mode is not supported on current platform") and Qwen3.5's
vision-language class (vLLM's Qwen3.5 module needs a torchvision, and PyPI has no CPU one). The rest of the
glue runs against the real vLLM in test_vllm_real.py."""

import pytest

from models import load_model
from rollout import VLLMEngine, encode_prompt, vllm_dtype


def test_sleep_mode_wakes_around_generation_and_sync(fake, tiny_model):
    """Stand-in: sleep mode exists on GPU builds only."""
    model, tok = load_model(tiny_model)
    engine = VLLMEngine(tiny_model, tok, sleep=True)
    (llm,) = fake.LLM.instances
    engine.generate(["a"], n=1, max_new_tokens=2)
    engine.sync_weights(model)
    # the reload goes through the worker's entry point (collective_rpc), which sets vLLM's current config
    assert llm.events == ["sleep1", "wake_up", "generate", "sleep1", "wake_up", "rpc:reload_weights",
                          "reset_prefix_cache", "sleep1"]
    assert llm.kwargs["enable_sleep_mode"] is True


def test_vlm_engine_uses_the_trainer_s_pixel_bounds(fake, tiny_vlm, images):
    """Stand-in: Qwen3.5's vision-language class. vLLM is started with the trainer's image bounds, and a
    prompt whose images vLLM expands to another token count than the trainer's processor stops the step."""
    _, tok = load_model(tiny_vlm, pixels=(1024, 4096))
    engine = VLLMEngine(tiny_vlm, tok, pixels=(1024, 4096))
    (llm,) = fake.LLM.instances
    assert llm.kwargs["mm_processor_kwargs"] == {"images_kwargs": {"size": {"shortest_edge": 1024,
                                                                            "longest_edge": 4096}}}
    (group,) = engine.generate([{"text": "What?", "images": images[1:2]}], n=1, max_new_tokens=2)
    assert group[0].prompt_ids == encode_prompt(tok, {"text": "What?", "images": images[1:2]})[0]
    _, small = load_model(tiny_vlm, pixels=(1024, 1024))  # the trainer resizes to 1 image token, vLLM to 4
    engine = VLLMEngine(tiny_vlm, small, pixels=(1024, 1024))
    with pytest.raises(RuntimeError, match="pixel bounds differ"):
        engine.generate([{"text": "What?", "images": images[1:2]}], n=1, max_new_tokens=2)


def test_response_prefix_with_images_on_vllm(fake, tiny_vlm, images):
    """Stand-in: Qwen3.5's vision-language class. The Prefix baseline on image data: the prompt's one
    placeholder per image, the prefix after the templated prompt; vLLM expands the images, the prefix ends the
    rollout's prompt ids and the text is the whole turn."""
    _, tok = load_model(tiny_vlm, pixels=(1024, 4096))
    engine = VLLMEngine(tiny_vlm, tok, pixels=(1024, 4096))
    prefix = tok("The answer is", add_special_tokens=False)["input_ids"]
    prompt = {"text": "What?", "images": images[:1]}
    (group,) = engine.generate([prompt], n=2, max_new_tokens=3, response_prefixes=[prefix])
    for r in group:
        assert r.prompt_ids == encode_prompt(tok, prompt)[0] + prefix and r.vision is not None
        assert r.text == tok.decode(prefix + r.token_ids, skip_special_tokens=True)


def test_a_reload_that_leaves_a_checked_tensor_stale_stops_the_run(fake, tiny_model):
    """Stand-in: a reload that reports every name loaded but leaves the embedding as it was (as a model runner
    whose reload path ignored the pushed tensors would): the spot check after the reload stops the run, where
    the log-prob gap would have stayed under its warning threshold for many steps at a small learning rate."""
    import torch

    model, tok = load_model(tiny_model)
    engine = VLLMEngine(tiny_model, tok)
    assert "model.embed_tokens.weight" in engine.spot  # stored as loaded: compared after every reload
    with torch.no_grad():
        model.model.embed_tokens.weight.add_(1e-3)
    copy_all = fake._Model.load_weights

    def skip_embedding(self, weights):
        loaded = copy_all(self, [(n, t) for n, t in weights if "embed_tokens" not in n])
        return loaded | {"model.embed_tokens.weight"}

    fake._Model.load_weights = skip_embedding
    try:
        with pytest.raises(RuntimeError,
                           match=r"engine's model\.embed_tokens\.weight is not what the trainer pushed"):
            engine.sync_weights(model)
    finally:
        fake._Model.load_weights = copy_all
    engine.sync_weights(model)  # a reload that takes: no error


def test_prompts_over_the_engine_context_get_no_rollouts(fake, tiny_model):
    """Stand-in for vLLM's refusal (the real one: test_vllm_real.py): a prompt whose response would not fit
    max_model_len gets no rollouts and is counted, the other prompts of the batch are sampled as usual."""
    _, tok = load_model(tiny_model)
    engine = VLLMEngine(tiny_model, tok, max_model_len=64)
    short, long = "Hi", "What is 3 + 4? " * 20
    groups = engine.generate([short, long, short], n=2, max_new_tokens=8)
    assert [len(g) for g in groups] == [2, 0, 2] and engine.too_long == 1


def test_engine_vllm_without_vllm_says_what_to_install(tiny_model, tmp_path, monkeypatch):
    """No stand-in: vLLM made absent, as on a machine without it; caught before any model loads."""
    import importlib.util

    import train

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "vllm" else find_spec(name, *a))
    with pytest.raises(SystemExit, match=r"--engine vllm needs vLLM, which is not installed: "
                                         r".*requirements-gpu\.txt"
                                         r".*requirements-vllm-cpu\.txt.*--engine transformers"):
        train.main(train.parse_config(["--student", tiny_model, "--teacher", "gold", "--data", "arithmetic",
                                       "--engine", "vllm", "--out-dir", str(tmp_path / "r")]))


def test_the_engine_s_precision_follows_the_trainer_s():
    """--vllm-dtype auto: bf16 on a GPU; on a CPU the trainer's, bf16 only under --mixed-precision bf16 (a
    fp32 engine beside a bf16 trainer sampled slower than the transformers engine); a choice is kept."""
    assert vllm_dtype("auto", "cuda", "no") == "bfloat16"
    assert vllm_dtype("auto", "cpu", "bf16") == "bfloat16"
    assert vllm_dtype("auto", "cpu", "no") == "float32"
    assert vllm_dtype("float32", "cpu", "bf16") == "float32" and vllm_dtype("bfloat16", "cpu") == "bfloat16"
