"""Vision-language students: images through data, prompts, rollouts, the update, vLLM and eval,
on a tiny VLM."""
import json
import os
import sys

import pytest
import torch

import train
from data import load_jsonl
from engines import transformers_engine
from engines.server import RemoteEngine
from engines.transformers_engine import TransformersEngine
from logprobs import response_logprobs, suppressed_token_ids
from models import load_model
from rollout import VLLMEngine, encode_prompt
from test_train import parity_grade, read_metrics
from zppo import Episode

PIXELS = ["--image-min-pixels", "1024", "--image-max-pixels", "4096"]  # 32x32 .. 64x64: 1 to 4 image tokens


def write_data(folder, images, n=8):
    """Sums, two in three with an image (one path, or a list of two, relative to the file)."""
    rows = []
    for i in range(n):
        row = {"id": f"q{i}", "question": f"What is {i} + {i + 3}?", "answer": str(2 * i + 3),
               "solution": f"{i} + {i + 3} = {2 * i + 3}. \\boxed{{{2 * i + 3}}}"}
        if i % 3 == 1:
            row["image"] = os.path.relpath(images[0], folder)
        elif i % 3 == 2:
            row["image"] = [images[1], os.path.relpath(images[2], folder)]
        rows.append(row)
    path = os.path.join(folder, "images.jsonl")
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return path


def test_image_paths_resolve_and_bad_ones_name_file_line_and_path(tmp_path, images):
    examples = load_jsonl(write_data(str(tmp_path), images))
    assert [len(ex.get("images", [])) for ex in examples[:3]] == [0, 1, 2]
    assert all(os.path.isabs(p) and os.path.exists(p) for ex in examples for p in ex.get("images", []))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "q", "answer": "1"}) + "\n" +
                   json.dumps({"question": "q", "answer": "1", "image": "missing.png"}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:2: image file not found: .*missing.png"):
        load_jsonl(str(bad))
    (tmp_path / "broken.png").write_bytes(b"not a png")
    bad.write_text(json.dumps({"question": "q", "answer": "1", "image": ["broken.png"]}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:1: image file unreadable: .*broken.png"):
        load_jsonl(str(bad))


def test_vlm_loads_as_its_vision_class_and_text_only_as_the_causal_lm(tiny_vlm, images):
    model, tok = load_model(tiny_vlm, pixels=(1024, 4096))
    assert type(model).__name__ == "Qwen3_5ForConditionalGeneration" and tok.image_processor is not None
    ids, vision = encode_prompt(tok, {"text": "What?", "images": images[:2]})
    pad = tok.convert_tokens_to_ids("<|image_pad|>")
    per_image = (vision["image_grid_thw"].prod(-1) // 4).tolist()
    assert ids.count(pad) == sum(per_image) and len(per_image) == 2
    assert ids.index(pad) < len(ids) - 10  # the image comes before the text
    text_model, text_tok = load_model(tiny_vlm, text_only=True)
    assert type(text_model).__name__ == "Qwen3_5ForCausalLM" and not hasattr(text_tok, "image_processor")
    with pytest.raises(ValueError, match="vision-language checkpoint without --text-only"):
        encode_prompt(text_tok, {"text": "What?", "images": images[:1]})


def test_update_logprobs_equal_the_sampler_and_a_direct_forward_with_the_same_pixels(tiny_vlm, images):
    """Micro-batches mix rows with and without images; every row's log-probs are those of a direct forward
    of that row alone with its pixel values, and those the engine recorded while sampling."""
    model, tok = load_model(tiny_vlm, pixels=(1024, 4096))
    engine = TransformersEngine(model, tok)
    prompts = [{"text": "What is 1 + 2?", "images": images[:2]}, "Hi", {"text": "Q", "images": images[2:]}]
    rollouts = [r for g in engine.generate(prompts, n=2, max_new_tokens=6, temperature=1.0) for r in g]
    seqs = [Episode(r.prompt_ids, r.token_ids, vision=r.vision) for r in rollouts]
    with torch.no_grad():
        batched, _mask, _ = response_logprobs(model, seqs, 1.0, tok.pad_token_id)
        for b, (s, r) in enumerate(zip(seqs, rollouts)):
            ids = torch.tensor([s.prompt_ids + s.token_ids])
            extra = ({} if s.vision is None
                     else {**s.vision, "mm_token_type_ids": (ids == model.config.image_token_id).int()})
            logits = model(input_ids=ids, **extra).logits[0, len(s.prompt_ids) - 1:-1]
            # the policy never emits placeholders
            logits[:, suppressed_token_ids(model.config)] = float("-inf")
            direct = (torch.log_softmax(logits.float(), -1).gather(-1, torch.tensor(s.token_ids)[:, None])
                      .squeeze(-1))
            n = len(s.token_ids)
            assert torch.allclose(batched[b, :n], direct, atol=1e-5)
            assert torch.allclose(batched[b, :n], torch.tensor(r.logprobs), atol=1e-4)
    assert sum(s.vision is not None for s in seqs) == 4


def test_training_on_mixed_image_and_text_questions_puts_the_image_in_every_prompt_kind(tiny_vlm, images,
                                                                                      tmp_path, monkeypatch):
    # image questions all wrong (hard: BCQ from the gold solution, NCQ), text ones mixed (a real update)
    monkeypatch.setattr("reward.grade",
                        lambda text, gold: float("\\boxed{" in text
                                                 or (gold in ("3", "9") and len(text) % 2 == 0)))
    out = str(tmp_path / "run")
    data = write_data(str(tmp_path), images, n=6)
    train.main(train.parse_config(["--student", tiny_vlm, "--teacher", "gold", "--data", data, *PIXELS,
                                   "--questions-per-step", "6", "--group-size", "4", "--max-new-tokens", "6",
                                   "--iters-per-step", "1", "--micro-batch-size", "8", "--lr", "1e-3",
                                   "--rho-aug", "1.0", "--steps", "1", "--out-dir", out,
                                   "--dump-reformulated", "--dump-rollouts", "--no-gradient-checkpointing"]))
    with open(os.path.join(out, "rollouts.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    with open(os.path.join(out, "reformulated.jsonl")) as f:
        dumped = [json.loads(line) for line in f]
    has_image = {f"q{i}" for i in range(6) if i % 3}
    # every rollout of an image question was sampled with its image(s), plain, BCQ and NCQ alike
    for r in rows:
        assert (r["images"] > 0) == (r["group"].split("/")[0] in has_image), r
    assert {r["kind"] for r in rows if r["images"]} == {"plain", "bcq", "ncq"}
    for d in dumped:
        assert bool(d["images"]) == (d["id"] in has_image)
    (m,) = read_metrics(out)
    assert m["sync/logprob_abs_diff"] < 1e-3 and m["train/grad_norm"] > 0
    ckpt = os.path.join(out, "checkpoints", "step_000001")
    assert os.path.exists(os.path.join(ckpt, "preprocessor_config.json"))  # a checkpoint reloads as a VLM
    assert type(load_model(ckpt)[0]).__name__ == "Qwen3_5ForConditionalGeneration"


def test_frozen_vision_tower_does_not_move(tiny_vlm, images, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    monkeypatch.setattr("reward.grade", parity_grade)
    out = str(tmp_path / "frozen")
    train.main(train.parse_config(["--student", tiny_vlm, "--teacher", "gold", "--data",
                                   write_data(str(tmp_path), images, n=6), *PIXELS,
                                   "--questions-per-step", "6", "--group-size", "2", "--max-new-tokens", "4",
                                   "--iters-per-step", "1", "--lr", "1e-2", "--steps", "1", "--out-dir", out,
                                   "--freeze-vision", "--no-bcq", "--no-ncq"]))
    before = load_file(os.path.join(tiny_vlm, "model.safetensors"))
    after = load_file(os.path.join(out, "checkpoints", "step_000001", "model.safetensors"))
    visual = [k for k in before if "visual" in k]
    assert visual and all(torch.equal(before[k], after[k]) for k in visual)
    assert any(not torch.equal(before[k], after[k]) for k in before if "visual" not in k)


def test_text_student_on_image_data_fails_before_training(tiny_model, images, tmp_path):
    with pytest.raises(ValueError, match="has images but the student is a text model"):
        train.main(train.parse_config(["--student", tiny_model, "--teacher", "gold", "--data",
                                       write_data(str(tmp_path), images), "--steps", "1",
                                       "--questions-per-step", "4", "--out-dir", str(tmp_path / "x")]))


def test_vllm_gets_images_as_multimodal_data_and_the_vlm_s_own_weight_names(fake, tiny_vlm, images):
    """Against the stand-in vLLM: the CPU build cannot load Qwen3.5's vision-language class."""
    model, tok = load_model(tiny_vlm, pixels=(1024, 4096))
    engine = VLLMEngine(tiny_vlm, tok)
    (llm,) = fake.LLM.instances
    seen = []
    real = llm.generate
    llm.generate = lambda requests, **kw: seen.extend(requests) or real(requests, **kw)
    (group,) = engine.generate([{"text": "What?", "images": images[:1]}], n=2, max_new_tokens=4)
    pad = tok.convert_tokens_to_ids("<|image_pad|>")
    assert "multi_modal_data" in seen[0] and seen[0]["prompt_token_ids"].count(pad) == 1  # vLLM expands it
    assert group[0].vision is not None and group[0].prompt_ids == encode_prompt(tok, {"text": "What?",
                                                                                     "images": images[:1]})[0]
    engine.sync_weights(model)
    pushed = llm.llm_engine.model_executor.driver_worker.worker.model_runner.model.loads[-1]
    own = list(model.state_dict())  # the tied head too: vLLM's reload restores it as a layer of its own
    assert sorted(pushed) == sorted(own) and any(n.startswith("model.visual.") for n in pushed)
    assert any(n.startswith("model.language_model.layers.") for n in pushed)


def test_remote_teacher_gets_images_as_data_urls(images, monkeypatch):
    sent = []

    def post(self, data, limit=None):  # the one HTTP call of the engine
        sent.append(json.loads(data))
        return 200, json.dumps({"choices": [{"message": {"content": "\\boxed{1}"},
                                             "finish_reason": "stop"}]}).encode()

    monkeypatch.setattr(RemoteEngine, "_post", post)
    RemoteEngine("http://127.0.0.1:9", "m").generate([{"text": "What?", "images": images[:1]}], n=1)
    (part_image, part_text) = sent[0]["messages"][0]["content"]
    assert (part_image["type"] == "image_url"
            and part_image["image_url"]["url"].startswith("data:image/png;base64,"))
    assert part_text == {"type": "text", "text": "What?"}


def test_image_benchmarks_go_with_their_images_to_a_vlm_and_are_skipped_for_a_text_student(tmp_path, images):
    import eval as ev
    from test_eval import ScriptedEngine

    folder = tmp_path / "bench"
    folder.mkdir()
    rel = os.path.relpath(images[0], folder)
    (folder / "ai2d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [
        {"question": "Which part is red?", "options": ["leaf", "stem", "root"], "answer": "1", "image": rel},
        {"question": "Which part is green?", "options": ["leaf", "stem"], "answer": "0",
         "image": images[1]}]))
    (folder / "mathvista.jsonl").write_text(json.dumps(
        {"pid": "7", "question": "How many?", "choices": None, "answer": "3", "decoded_image": rel}) + "\n")
    (folder / "mmmu_pro.jsonl").write_text(json.dumps(  # the vision config: the question is inside the image
        {"id": "v1", "options": "['1', '2', '3']", "answer": "C", "image": rel, "config": "vision"}) + "\n")

    text = ScriptedEngine(lambda p, k: "\\boxed{B}")
    summary = ev.run_benchmarks(text, ["ai2d"], data_dir=str(folder), log=lambda *_: None)
    assert "ai2d" in summary["errors"] and "image: 2" in summary["errors"]["ai2d"]  # all rows need eyes

    class VisionEngine(ScriptedEngine):
        tokenizer = type("T", (), {"image_processor": object()})()

    answers = {"Which part is red?": "\\boxed{B}", "Which part is green?": "\\boxed{B}",
               "How many?": "\\boxed{3}"}
    seen = VisionEngine(lambda p, k: answers.get(p["text"].split("\n")[0].split(" You FIRST")[0],
                                                 "\\boxed{C}"))
    summary = ev.run_benchmarks(seen, ["ai2d", "mathvista", "mmmu_pro"], data_dir=str(folder),
                                log=lambda *_: None)
    prompts = [p for call in seen.calls for p in call["prompts"]]
    assert all(isinstance(p, dict) and p["images"] and os.path.isabs(p["images"][0]) for p in prompts)
    assert prompts[0]["text"].startswith("Which part is red?\n\nA. leaf\nB. stem\nC. root")
    assert (summary["benchmarks"]["ai2d"]["accuracy"] == 0.5
            and summary["benchmarks"]["mathvista"]["accuracy"] == 1.0)
    assert (summary["benchmarks"]["mmmu_pro"]["accuracy"] == 1.0
            and summary["benchmarks"]["ai2d"]["protocol"] == "Exact+Judge")
    assert summary["macro"]["vlm"] == pytest.approx(2.5 / 3) and summary["macro_over"]["vlm"] == 3


def test_eval_cli_scores_an_image_benchmark_file_with_a_tiny_vlm(tiny_vlm, images, tmp_path):
    import subprocess

    from conftest import ROOT

    (tmp_path / "ai2d.jsonl").write_text("".join(json.dumps(
        {"question": f"Which {i}?", "options": ["a", "b"], "answer": "0", "image": images[i % 3]}) + "\n"
        for i in range(3)))
    res = subprocess.run([sys.executable, "eval.py", "--model", tiny_vlm, "--benchmarks", "ai2d",
                          "--data-dir", str(tmp_path), "--max-new-tokens", "4",
                          "--out", str(tmp_path / "res.json")],
                         cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    with open(tmp_path / "res.json") as f:
        result = json.load(f)["benchmarks"]["ai2d"]
    assert result["questions"] == 3 and not result["skipped"]


def test_eval_resizes_images_within_the_papers_pixel_bounds_not_the_checkpoints(tiny_vlm, images, tmp_path,
                                                                                 monkeypatch):
    """docs/EVAL.md: every checkpoint is evaluated with images of 256x32x32 to 1280x32x32 pixels. The tiny
    VLM's own processor says 32x32 .. 64x64; eval.py's --image-min-pixels / --image-max-pixels (the paper's by
    default) replace it, and other bounds can be asked for."""
    from transformers import AutoImageProcessor

    import eval as ev
    from rollout import PAPER_PIXELS, open_image

    (tmp_path / "ai2d.jsonl").write_text(json.dumps(
        {"question": "Which?", "options": ["a", "b"], "answer": "0", "image": images[0]}) + "\n")
    seen, real = [], transformers_engine.TransformersEngine.generate

    def generate(self, prompts, *a, **kw):  # the grid each image prompt reaches the model with
        seen.extend(encode_prompt(self.tokenizer, p)[1]["image_grid_thw"].tolist() for p in prompts)
        return real(self, prompts, *a, **kw)

    monkeypatch.setattr(transformers_engine.TransformersEngine, "generate", generate)

    def grid(*bounds):
        size = {"size": {"shortest_edge": bounds[0], "longest_edge": bounds[1]}} if bounds else {}
        return AutoImageProcessor.from_pretrained(tiny_vlm, **size)(images=[open_image(images[0])])[
            "image_grid_thw"].tolist()

    run = dict(model=tiny_vlm, benchmarks="ai2d", data_dir=str(tmp_path), max_new_tokens=2)
    assert not ev.main(ev.EvalConfig(**run))["errors"]
    ((t, h, w),) = grid(*PAPER_PIXELS)
    assert seen == [[[t, h, w]]] and PAPER_PIXELS[0] <= h * w * 16 * 16 <= PAPER_PIXELS[1]  # 16-pixel patches
    assert grid() != grid(*PAPER_PIXELS) and grid() == grid(32 * 32, 64 * 64)  # the checkpoint's own differ
    seen.clear()
    assert not ev.main(ev.EvalConfig(**run, image_min_pixels=32 * 32, image_max_pixels=64 * 64))["errors"]
    assert seen == [grid()]
    with pytest.raises(SystemExit, match="--image-max-pixels 4096: must be >= --image-min-pixels"):
        ev.main(ev.EvalConfig(**run, image_min_pixels=5000, image_max_pixels=4096))
