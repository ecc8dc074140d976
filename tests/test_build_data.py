"""scripts/build_data.py on small local stand-ins of Vero-600k and MMFineReason (rows in the hub sets'
columns): every filter's count checked by hand, the output read by train.py's loader, a build resumed after
a crash; every missing or mistyped column counted or stopped at its file and line, every bad image counted
under `image`; a real builder process killed inside a sub-set, then rerun on swapped images (rebuilt) or an
edited source, a changed image of a built sub-set, another setting or tokenizer (refused, naming it)."""
import json
import os
import re
import subprocess
import sys
import time

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
                                          "question": 0, "duplicate": 1, "image": 1, "prompt": 1, "cap": 1}
    assert summary["removed"]["mmfr"] == {"tier": 0, "cross-source": 1, "pass_rate": 2, "answer": 0,
                                          "question": 0, "duplicate": 1, "image": 0, "prompt": 0, "cap": 0}
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

    def dies_on_the_ninth(values, base, read):
        # the image opens, in order: Vero ai2d's 5 candidates, evochart's 2 (its cap), then MMFineReason
        # geo3k's 3
        calls.append(values)
        if len(calls) == 9:
            raise KeyboardInterrupt
        return real(values, base, read)

    monkeypatch.setattr(build_data, "open_images", dies_on_the_ninth)
    with pytest.raises(KeyboardInterrupt):
        build_data.build(args, log=lambda *_: None)
    with open(os.path.join(args.out, "state.json")) as f:
        state = json.load(f)
    assert set(state["done"]) == {"vero-ai2d", "vero-evochart"}
    calls.clear()
    monkeypatch.setattr(build_data, "open_images", lambda v, b, r: calls.append(v) or real(v, b, r))
    summary = build_data.build(args, log=lambda *_: None)
    assert len(calls) == 3 + 1  # only geo3k and raven were built again
    assert summary["kept"] == {"vero": 4, "mmfr": 3} and summary["total"] == 7
    assert summary["removed"]["vero"]["duplicate"] == 1 and summary["removed"]["mmfr"]["duplicate"] == 1
    assert summary["removed"]["vero"]["cap"] == 1 and summary["removed"]["mmfr"]["pass_rate"] == 2
    with pytest.raises(ValueError, match="other settings"):  # a rerun must not mix two recipes in one folder
        build_data.build(build_data.parse_args(["--out", args.out, "--vero", args.vero, "--mmfr", args.mmfr]),
                         log=lambda *_: None)


def write_rows(path, rows):
    with open(path, "w") as f:
        f.writelines((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)
    return str(path)


def without(row, key):
    return {k: v for k, v in row.items() if k != key}


def with_prompt(content):
    row = vero_row("stem-ai2d_merged", "What is 9 + 9?", "18", "red.png")
    row["prompt"] = content
    return row


VERO_OK = vero_row("stem-ai2d_merged", "What is 1 + 1?", "2", "red.png")
MMFR_OK = mmfr_row(1, "Geometry3K", "Find x.", "5", "red.png", 0.25)
# (source, line 2 of that source, what happens: ("stop", column) or ("removed", filter))
ROW_CASES = {
    "vero images a string": ("vero", dict(VERO_OK, images="red.png"), ("stop", "images")),
    "vero images a list of numbers": ("vero", dict(VERO_OK, images=[5]), ("stop", "images")),
    "vero images null": ("vero", dict(VERO_OK, images=None), ("removed", "image")),
    "vero images empty": ("vero", dict(VERO_OK, images=[]), ("removed", "image")),
    "vero images missing": ("vero", without(VERO_OK, "images"), ("removed", "image")),
    "vero answer a number": ("vero", dict(VERO_OK, answer=2), ("stop", "answer")),
    "vero answer a list": ("vero", dict(VERO_OK, answer=["2"]), ("stop", "answer")),
    "vero answer null": ("vero", dict(VERO_OK, answer=None), ("removed", "answer")),
    "vero answer missing": ("vero", without(VERO_OK, "answer"), ("removed", "answer")),
    "vero prompt missing": ("vero", without(VERO_OK, "prompt"), ("stop", "prompt")),
    "vero prompt a string": ("vero", with_prompt("What is 9 + 9?"), ("stop", "prompt")),
    "vero prompt without a user turn": ("vero", with_prompt([{"role": "system", "content": "Be brief."}]),
                                        ("stop", "prompt")),
    "vero prompt content a number": ("vero", with_prompt([{"role": "user", "content": 9}]),
                                     ("stop", "prompt")),
    "vero prompt text part a number": ("vero", with_prompt([{"role": "user", "content": [
        {"type": "text", "text": 9}]}]), ("stop", "prompt")),
    "vero prompt only a directive": ("vero", with_prompt([{"role": "user", "content": "Please reason step by "
                                                                                   "step."}]),
                                     ("removed", "question")),
    "vero data_source missing": ("vero", without(VERO_OK, "data_source"), ("stop", "data_source")),
    "vero data_source a number": ("vero", dict(VERO_OK, data_source=7), ("stop", "data_source")),
    "mmfr pass_rate a string": ("mmfr", dict(MMFR_OK, pass_rate="0.3"), ("stop", "pass_rate")),
    "mmfr pass_rate NaN": ("mmfr", json.dumps(dict(MMFR_OK, pass_rate=float("nan"))), ("stop", "pass_rate")),
    "mmfr pass_rate over 1": ("mmfr", dict(MMFR_OK, pass_rate=1.5), ("stop", "pass_rate")),
    "mmfr pass_rate true": ("mmfr", dict(MMFR_OK, pass_rate=True), ("stop", "pass_rate")),
    "mmfr pass_rate null": ("mmfr", dict(MMFR_OK, pass_rate=None), ("removed", "pass_rate")),
    "mmfr question missing": ("mmfr", without(MMFR_OK, "question"), ("stop", "question")),
    "mmfr question a number": ("mmfr", dict(MMFR_OK, question=5), ("stop", "question")),
    "mmfr question only the image marker": ("mmfr", dict(MMFR_OK, question="<image>\n"),
                                            ("removed", "question")),
    "mmfr image a number": ("mmfr", dict(MMFR_OK, image=5), ("stop", "image")),
    "mmfr image null": ("mmfr", dict(MMFR_OK, image=None), ("removed", "image")),
    "mmfr source missing": ("mmfr", without(MMFR_OK, "source"), ("stop", "source")),
    "mmfr answer a number": ("mmfr", dict(MMFR_OK, answer=5.0), ("stop", "answer")),
    "mmfr id an object": ("mmfr", dict(MMFR_OK, id={"n": 2}), ("stop", "id")),
    "mmfr row a list": ("mmfr", [1, 2], ("stop", "row")),
}


@pytest.mark.parametrize("case", ROW_CASES)
def test_a_row_with_a_missing_or_mistyped_column_stops_naming_file_line_column_or_is_counted(tmp_path, case):
    """Each column the builder reads has one rule (the module docstring's table): a row the paper filters (no
    answer, no pass_rate, no image, no question left) is counted under that filter; a column of another type
    stops the build before any sub-set is built, naming the file, the line, the column and what was
    expected."""
    kind, bad, (outcome, name) = ROW_CASES[case]
    image(str(tmp_path), "red.png", (120, 110), (200, 0, 0))
    vero = write_rows(tmp_path / "vero.jsonl", [VERO_OK, bad] if kind == "vero" else [VERO_OK])
    mmfr = write_rows(tmp_path / "mmfr.jsonl", [MMFR_OK, bad] if kind == "mmfr" else [MMFR_OK])
    out = str(tmp_path / "out")
    args = build_data.parse_args(["--out", out, "--vero", vero, "--mmfr", mmfr])
    if outcome == "stop":
        with pytest.raises(ValueError) as e:
            build_data.build(args, log=lambda *_: None)
        message = str(e.value)
        assert message.startswith(f"{tmp_path / kind}.jsonl:2: "), message
        assert (f"'{name}'" if name != "row" else "a JSON object") in message, message
        assert "expected" in message, message
        assert not os.path.exists(os.path.join(out, "state.json"))  # stopped before any sub-set was built
        return
    summary = build_data.build(args, log=lambda *_: None)
    assert summary["removed"][kind][name] == 1, summary["removed"]
    assert summary["kept"] == {"vero": 1, "mmfr": 1}
    assert len(load_jsonl(os.path.join(out, "zppo77k.jsonl"))) == 2  # what it wrote, train.py loads


def test_every_bad_image_is_counted_under_the_image_filter_and_modes_the_processor_takes_are_kept(tmp_path):
    from test_image_files import bad_images

    folder = str(tmp_path)
    bad = bad_images(folder)
    if os.geteuid() != 0:
        image(folder, "secret.png", (120, 110), (1, 2, 3))
        os.chmod(os.path.join(folder, "secret.png"), 0)
        bad["no permission"] = "secret.png"
    from PIL import Image

    modes = {}
    for mode in ("P", "LA", "1", "I;16", "CMYK", "RGBA"):
        modes[mode] = f"mode_{mode.replace(';', '_')}" + (".tiff" if mode == "CMYK" else ".png")
        Image.new(mode, (120, 110)).save(os.path.join(folder, modes[mode]))
    vero = [vero_row("stem-ai2d_merged", f"Case {case}?", "1", name) for case, name in bad.items()]
    vero += [vero_row("stem-ai2d_merged", f"Mode {mode}?", "1", name) for mode, name in modes.items()]
    vero.append(vero_row("stem-ai2d_merged", "Two images, the second bad?", "1", "good.png"))
    vero[-1]["images"] = ["good.png", "crc_only.png"]
    args = build_data.parse_args(["--out", str(tmp_path / "out"),
                                  "--vero", write_rows(tmp_path / "v.jsonl", vero),
                                  "--mmfr", write_rows(tmp_path / "m.jsonl", [])])
    summary = build_data.build(args, log=lambda *_: None)
    assert summary["removed"]["vero"]["image"] == len(bad) + 1, summary["removed"]
    assert summary["kept"]["vero"] == len(modes)
    examples = load_jsonl(os.path.join(args.out, "zppo77k.jsonl"))  # re-encoded as RGB PNG: train.py loads it
    assert sorted(e["question"] for e in examples) == sorted(f"Mode {m}?" for m in modes)


def run_builder(*argv):
    return subprocess.run([sys.executable, BUILDER, *argv], capture_output=True, text=True, timeout=300,
                          check=False)


BUILDER = os.path.join(ROOT, "scripts", "build_data.py")


def pixels(path):
    from PIL import Image

    with Image.open(path) as im:
        return im.size, im.convert("RGB").tobytes()


def kill_while_it_reads(fifo, argv, log_path):
    """Starts the builder, waits until it opens `fifo` to read a row's image, and kills it (SIGKILL) there,
    while it waits for the bytes. Its output goes to a file: a pipe could fill and block it."""
    with open(log_path, "w") as log, \
            subprocess.Popen([sys.executable, BUILDER, *argv], stdout=log, stderr=log) as proc:
        writer = None
        try:
            for _ in range(1200):  # the write end opens once the builder has the FIFO open to read
                try:
                    writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
                    break
                except OSError:  # no reader yet
                    assert proc.poll() is None, "the builder ended before the FIFO's row"
                    time.sleep(0.1)
            assert writer is not None, "the builder never reached the FIFO's row"
            proc.kill()
            proc.wait(timeout=60)
        finally:
            if writer is not None:
                os.close(writer)
            proc.kill()


def test_a_build_killed_mid_sub_set_then_given_other_images_or_rows_is_rebuilt_or_refused(tmp_path):
    """A real builder process is killed inside a sub-set (it blocks reading one row's image, a FIFO, and is
    killed there); the images of that sub-set's rows already written are then swapped at the source. The
    rerun pairs every question with its image as the sources now have them. After that, a changed image of a
    built sub-set, a changed source file and a changed setting are each refused, naming what changed."""
    src = tmp_path / "src"
    src.mkdir()
    image(str(src), "a.png", (120, 110), (200, 0, 0))
    image(str(src), "b.png", (130, 100), (0, 0, 200))
    rows = [vero_row("stem-ai2d_merged", "What is 1 + 1?", "2", "a.png"),
            vero_row("stem-ai2d_merged", "What is 2 + 2?", "4", "b.png")]
    for k in range(6):  # the sub-set that is cut: rows 0-5, then the FIFO's row among them
        image(str(src), f"s{k}.png", (120 + k, 110), (10 * k, 100, 0))
        rows.append(vero_row("chart_ocr-evochart", f"Which bar is {k}?", str(k), f"s{k}.png"))
    rows.insert(5, vero_row("chart_ocr-evochart", "Which bar is the FIFO?", "F", "fifo.png"))
    vero = write_rows(src / "vero.jsonl", rows)
    mmfr = write_rows(src / "mmfr.jsonl", [])
    fifo = str(src / "fifo.png")
    os.mkfifo(fifo)
    out = str(tmp_path / "out")
    kill_while_it_reads(fifo, ["--out", out, "--vero", vero, "--mmfr", mmfr], tmp_path / "log.txt")
    with open(os.path.join(out, "state.json")) as f:
        assert set(json.load(f)["done"]) == {"vero-ai2d"}  # killed inside vero-evochart
    assert os.listdir(os.path.join(out, "images", "vero-evochart")), "no image written before the kill"
    for k in range(6):  # every image of the cut sub-set swapped for another
        image(str(src), f"s{k}.png", (140 + k, 120), (0, 20 * k, 250))
    os.remove(fifo)
    image(str(src), "fifo.png", (120, 120), (5, 5, 5))
    done = run_builder("--out", out, "--vero", vero, "--mmfr", mmfr)
    assert done.returncode == 0, done.stderr
    source = {r["prompt"][1]["content"][1]["text"]: str(src / r["images"][0]) for r in rows}
    with open(os.path.join(out, "zppo77k.jsonl")) as f:
        built = [json.loads(line) for line in f]
    assert len(built) == len(rows)
    for row in built:  # every question with its source's image as it is now
        assert pixels(os.path.join(out, row["image"][0])) == pixels(source[row["question"]]), row["question"]

    image(str(src), "a.png", (120, 110), (250, 250, 0))  # an image of the built sub-set vero-ai2d changed
    refused = run_builder("--out", out, "--vero", vero, "--mmfr", mmfr)
    assert refused.returncode != 0
    assert re.search(r"image .*a\.png \(read by vero-ai2d\) changed", refused.stderr), refused.stderr
    assert "new --out" in refused.stderr
    image(str(src), "a.png", (120, 110), (200, 0, 0))  # restored: the same bytes, the rerun goes through
    assert run_builder("--out", out, "--vero", vero, "--mmfr", mmfr).returncode == 0

    rows[0]["answer"] = "3"  # the source file edited
    write_rows(src / "vero.jsonl", rows)
    refused = run_builder("--out", out, "--vero", vero, "--mmfr", mmfr)
    assert refused.returncode != 0
    named = re.search(r"--vero .*vero\.jsonl changed \(sha256 \w+ -> sha256 \w+\)", refused.stderr)
    assert named, refused.stderr
    refused = run_builder("--out", out, "--vero", vero, "--mmfr", mmfr, "--seed", "1")
    assert refused.returncode != 0 and "--seed 0 -> 1" in refused.stderr, refused.stderr


def test_a_changed_tokenizer_is_refused_and_a_moved_source_is_not(tmp_path, tiny_vlm):
    import shutil

    tokenizer = str(tmp_path / "student")
    shutil.copytree(tiny_vlm, tokenizer)
    args = args_for(tmp_path, tokenizer)
    build_data.build(args, log=lambda *_: None)
    moved = tmp_path / "moved"
    moved.mkdir()
    for name in os.listdir(tmp_path):  # the same sources and images, in another folder
        if name.endswith((".jsonl", ".png")):
            shutil.copy(tmp_path / name, moved / name)
    again = build_data.parse_args(["--out", args.out, "--vero", str(moved / "vero.jsonl"), "--mmfr",
                                   str(moved / "mmfr.jsonl"), "--tokenizer", tokenizer, "--cap2", "2",
                                   "--image-min-pixels", "1024", "--image-max-pixels", "4096",
                                   "--max-prompt-tokens", str(args.max_prompt_tokens)])
    assert build_data.build(again, log=lambda *_: None)["total"] == 7
    with open(os.path.join(tokenizer, "chat_template.jinja"), "a") as f:
        f.write("{# another template #}")
    with pytest.raises(ValueError, match=r"--tokenizer .*student changed .*new --out"):
        build_data.build(args, log=lambda *_: None)

