"""scripts/build_data.py on small local stand-ins of Vero-600k and MMFineReason (rows in the hub sets'
columns): every filter's count checked by hand, the output read by train.py's loader, and a build resumed
after a crash."""
import json
import os
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "scripts"))
import build_data

from data import load_jsonl


def image(folder, name, size, colour):
    from PIL import Image

    path = os.path.join(folder, name)
    Image.new("RGB", size, colour).save(path)
    return name


def vero_row(source, question, answer, img):
    """A Vero-600k row: veRL prompt (system + user parts), images, reward_type, data_source, domain,
    answer."""
    return {"prompt": [{"role": "system", "content": "Answer in <answer></answer> tags."},
                       {"role": "user", "content": [{"type": "image", "image": img},
                                                    {"type": "text", "text": question}]}],
            "images": [img], "reward_type": "numeric", "data_source": source, "domain": "stem",
            "answer": answer}


def mmfr_row(i, source, question, answer, img, pass_rate):
    """An MMFineReason-SFT-586K row: the question carries an <image> marker; pass_rate of the 4B
    annotator."""
    return {"id": i, "question": f"<image>\n{question}", "answer": answer,
            "original_answer": f"<think>...</think>{answer}", "qwen3vl_235b_thinking_response": "...",
            "image": img, "source": source, "pass_rate": pass_rate, "is_consistent": True}


LONG = " ".join(["word"] * 400)


def stand_ins(folder):
    red, blue = (image(folder, "red.png", (120, 110), (200, 0, 0)),
                 image(folder, "blue.png", (130, 100), (0, 0, 200)))
    green, small = (image(folder, "green.png", (140, 120), (0, 200, 0)),
                    image(folder, "small.png", (50, 120), (9, 9, 9)))
    vero = [
        vero_row("stem-ai2d_merged", "What is 1 + 1? Please reason step by step.", "2", red),  # kept
        vero_row("stem-ai2d_merged", "What is 2 + 2?", "4", blue),                      # kept
        vero_row("stem-ai2d_merged", "What is 3 + 3?", "6", small),                     # image: 50 px side
        vero_row("stem-ai2d_merged", "What is 4 + 4?", "8" * 600, red),                 # answer: > 512
        vero_row("stem-ai2d_merged", "What is 5 + 5?", "", red),                        # answer: none
        vero_row("stem-ai2d_merged", f"What is {LONG}?", "1", green),                   # prompt: too long
        vero_row("stem-ai2d_merged", "What is 1 + 1?", "2", red),                       # duplicate of row 1
        vero_row("chart_ocr-evochart", "Which bar is tallest?", "A", red),              # evochart: cap 2
        vero_row("chart_ocr-evochart", "Which bar is shortest?", "B", blue),
        vero_row("chart_ocr-evochart", "Which bar is red?", "C", green),
        vero_row("grounding-refcocog", "Where is the cat?", "[1, 2, 3, 4]", red),       # tier: in none
    ]
    mmfr = [
        mmfr_row(1, "AI2D", "Which organ is shown?", "B", green, 0.0),                  # cross-source
        mmfr_row(2, "Geometry3K", "Find x.", "5", green, 0.25),                         # kept
        mmfr_row(3, "Geometry3K", "Find y.", "6", green, 0.75),                         # pass_rate > 0.5
        mmfr_row(4, "Geometry3K", "Find z.", "7", green, None),                         # pass_rate: none
        mmfr_row(5, "Geometry3K", "Find w.", "8", blue, 0.5),                           # kept (0.5 is fine)
        mmfr_row(6, "Geometry3K", "What is 2 + 2?", "4", blue, 0.0),                    # duplicate of Vero
        mmfr_row(7, "Raven", "Which panel completes it?", "D", red, 0.1),               # kept
    ]
    for name, rows in (("vero.jsonl", vero), ("mmfr.jsonl", mmfr)):
        with open(os.path.join(folder, name), "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    return os.path.join(folder, "vero.jsonl"), os.path.join(folder, "mmfr.jsonl")


def args_for(tmp_path, tiny_vlm, out="out", max_tokens=None):
    vero, mmfr = stand_ins(str(tmp_path))
    argv = ["--out", str(tmp_path / out), "--vero", vero, "--mmfr", mmfr, "--tokenizer", tiny_vlm,
            "--cap2", "2", "--image-min-pixels", "1024", "--image-max-pixels", "4096"]
    if max_tokens is None:  # a normal prompt fits with room; the 400-word question does not
        tok = build_data.load_tokenizer(tiny_vlm, (1024, 4096))
        normal = build_data.prompt_tokens(tok, "What is 2 + 2?", [str(tmp_path / "blue.png")])
        long = build_data.prompt_tokens(tok, f"What is {LONG}?", [str(tmp_path / "green.png")])
        assert long > normal + 200
        max_tokens = normal + 100
    return build_data.parse_args(argv + ["--max-prompt-tokens", str(max_tokens)])


def test_canonical_names_merge_the_two_sources_sub_sets():
    assert build_data.canonical("stem-ai2d_merged") == build_data.canonical("AI2D") == "ai2d"
    assert build_data.canonical("Geometry3K") == build_data.canonical("geo3k") == "geo3k"
    assert build_data.canonical("CoSyn_400k_math") == "cosynmath"
    assert build_data.canonical("arxivqa_formatted") == "arxivqa"
    assert build_data.canonical("chart_ocr-infographic_vqa") == "infographicvqa"
    assert build_data.canonical("mm-openr1") == "mmopenr1"


def test_every_filter_removes_what_it_should_counts_by_hand(tmp_path, tiny_vlm):
    args = args_for(tmp_path, tiny_vlm)
    summary = build_data.build(args, log=lambda *_: None)
    assert summary["rows"] == {"vero": 11, "mmfr": 7}
    assert summary["removed"]["vero"] == {"tier": 1, "cross-source": 0, "pass_rate": 0, "answer": 2,
                                          "duplicate": 1, "image": 1, "prompt": 1, "cap": 1}
    assert summary["removed"]["mmfr"] == {"tier": 0, "cross-source": 1, "pass_rate": 2, "answer": 0,
                                          "duplicate": 1, "image": 0, "prompt": 0, "cap": 0}
    assert summary["kept"] == {"vero": 4, "mmfr": 3} and summary["total"] == 7
    assert summary["per_subset"] == {"mmfr-geo3k": 2, "mmfr-raven": 1, "vero-ai2d": 2, "vero-evochart": 2}
    out = os.path.join(args.out, "zppo77k.jsonl")
    examples = load_jsonl(out)  # what train.py --data reads
    assert len(examples) == 7 and len({e["id"] for e in examples}) == 7
    assert all(len(e["images"]) == 1 and os.path.exists(e["images"][0]) for e in examples)
    by_q = {e["question"]: e for e in examples}
    # the benchmark-style directive went; the closer comes at training
    assert by_q["What is 1 + 1?"]["answer"] == "2"
    assert "Find x." in by_q and "Find w." in by_q and "<image>" not in "".join(by_q)
    with open(out) as f:
        rows = [json.loads(line) for line in f]
    assert [r["source"] for r in rows] == ["vero"] * 4 + ["mmfr"] * 3  # Vero first
    assert {r["subset"]: r["tier"] for r in rows} == {"ai2d": 1, "evochart": 2, "geo3k": 1, "raven": 2}
    with open(os.path.join(args.out, "summary.md")) as f:
        table = f.read()
    assert "| removed: pass_rate | 0 | 2 |" in table and "| kept | 4 | 3 |" in table


def test_a_build_resumes_where_it_stopped(tmp_path, tiny_vlm, monkeypatch):
    args = args_for(tmp_path, tiny_vlm)
    real, calls = build_data.open_images, []

    def dies_on_the_ninth(values, base):
        # the image opens, in order: Vero ai2d's 5 candidates, evochart's 2 (its cap), then MMFineReason
        # geo3k's 3
        calls.append(values)
        if len(calls) == 9:
            raise KeyboardInterrupt
        return real(values, base)

    monkeypatch.setattr(build_data, "open_images", dies_on_the_ninth)
    with pytest.raises(KeyboardInterrupt):
        build_data.build(args, log=lambda *_: None)
    with open(os.path.join(args.out, "state.json")) as f:
        state = json.load(f)
    assert set(state["done"]) == {"vero-ai2d", "vero-evochart"}
    calls.clear()
    monkeypatch.setattr(build_data, "open_images", lambda v, b: calls.append(v) or real(v, b))
    summary = build_data.build(args, log=lambda *_: None)
    assert len(calls) == 3 + 1  # only geo3k and raven were built again
    assert summary["kept"] == {"vero": 4, "mmfr": 3} and summary["total"] == 7
    assert summary["removed"]["vero"]["duplicate"] == 1 and summary["removed"]["mmfr"]["duplicate"] == 1
    assert summary["removed"]["vero"]["cap"] == 1 and summary["removed"]["mmfr"]["pass_rate"] == 2
    with pytest.raises(ValueError, match="other settings"):  # a rerun must not mix two recipes in one folder
        build_data.build(build_data.parse_args(["--out", args.out, "--vero", args.vero, "--mmfr", args.mmfr]),
                         log=lambda *_: None)
