"""benchmarks.py: the Det. scorers against hand-computed cases, the BenchJudge prompts against digests of
their upstream texts, and the paper's other VLM benchmarks end to end on local rows in each hub set's own
columns."""
import hashlib
import json
import os

import pytest

import bench_data as bd
import bench_prompts
import benchmarks as bm
import eval as ev
from test_eval import ScriptedEngine, fake_hub  # noqa: F401  (a fixture)

# ---------------------------------------------------------------------------------------------------------
# ANLS (InfographicVQA)


@pytest.mark.parametrize("pred,golds,expected", [
    ("Paris", ["paris"], 1.0),
    ("Pari", ["Paris"], 1 - 1 / 5),                      # one deletion over 5 characters
    ("Londn", ["London", "Londres"], 1 - 1 / 6),         # the best gold: London (Londres is 3 edits over 7)
    ("abc", ["xyz"], 0.0),
    ("abcd", ["abxy"], 0.5),                             # exactly at the threshold: kept
    ("abcde", ["abxyz"], 0.0),                           # 0.4 < 0.5: scores 0
    ("  New   York ", ["new york"], 1.0),                # case and whitespace are normalised
    ("new   yrk", ["new york"], 1 - 1 / 9),              # ... but the length is the raw one (9), as upstream
    ("", [""], 1.0),
])
def test_anls_as_the_infographicvqa_script_defines_it(pred, golds, expected):
    assert bm.anls(pred, golds) == pytest.approx(expected)


def test_det_scorers_read_the_boxed_answer_else_the_reply_after_thinking():
    ex = {"answer": ["42 percent"]}
    assert bm.score_anls("<think>maybe 40 percent</think> It is \\boxed{42 percent}.", ex) == 1.0
    assert bm.score_anls("<think>\\boxed{42 percent}</think>", ex) == 1.0  # a box is a box wherever it is
    assert bm.score_anls("<think>42 percent</think>40 percent", ex) == pytest.approx(1 - 1 / 10)


# ---------------------------------------------------------------------------------------------------------
# OCRBench v2's scorer, per task type


def ocr(kind, answers, pred, method=None, **extra):
    return bm.OCR_TYPES[kind][1](pred, {"answer": answers, "ocr_type": kind, "ocr_eval": method, **extra})


def test_ocrbench_vqa_containment_and_anls_for_long_answers():
    assert ocr("text recognition en", ["apple"], "an Apple pie") == 1.0
    # upstream's own example (vqa_metric.py __main__)
    assert ocr("cognition VQA en", ["apple", "banana pie", "apple pie and orange"],
               "apple pie and banana") == 1.0
    long = "the quick brown fox jumps"  # 5 words: similarity, not containment
    assert ocr("reasoning VQA en", [long], "the quick brown fox jumped") == pytest.approx(1 - 2 / 26)
    assert ocr("reasoning VQA en", [long], "a slow red dog sat") == 0.0
    assert ocr("cognition VQA en", ["Apple"], "apple", method="case sensitive") == 0.0
    assert ocr("cognition VQA en", ["Apple"], "an Apple", method="case sensitive") == 1.0
    assert ocr("science QA en", ["B"], "(B)", method="multiple choice") == 1.0
    assert ocr("science QA en", ["B"], "B or C", method="multiple choice") == 0.0
    assert ocr("cognition VQA cn", ["北京 大学"], "在北京大学") == 1.0  # Chinese: spaces removed


def test_ocrbench_counting_formula_handwriting_kie_and_boxes():
    assert ocr("text counting en", ["10"], "I count 8 items", "regression") == pytest.approx(0.8)
    assert ocr("text counting en", ["10"], "4", "regression") == 0.0   # 0.4 <= 0.5
    assert ocr("text counting en", ["10"], "20", "regression") == 0.0  # >= twice the gold
    assert ocr("text counting en", ["3"], "there are 3", "exact match") == 1.0
    assert ocr("formula recognition en", ["\\frac {a}{b}"], "\\frac{a}{ b}") == 1.0
    assert ocr("formula recognition cn", ["\\text{面积}=3"], "面积 = 3") == 1.0
    assert ocr("formula recognition en", ["x^2"], "x^3") == 0.0
    assert ocr("handwritten answer extraction cn", ["AC"], "答案是A、C") == 1.0
    assert ocr("handwritten answer extraction cn", ["AC"], "答案是A") == 0.0
    # key information: the best over the value combinations; keys are the union of both dicts
    gold = [{"name": "ACME", "total": ["9.00", "9"]}]
    assert ocr("key information extraction en", gold, '{"name": "acme ", "total": "9", "date": "x"}') == \
        pytest.approx(2 / 3)
    assert ocr("key information extraction cn", ["{'店名': '好又多', '金额': '12'}"],
               "店名: 好又多\n金额: 13") == 0.5
    assert ocr("text grounding en", [0, 0, 10, 10], "at (5, 0, 15, 10)") == pytest.approx(50 / 150)
    assert ocr("text grounding en", [0, 0, 10, 10], "nowhere") == 0.0
    assert ocr("VQA with position en", ["hello"], '{"answer": "hello", "bbox": "[0, 0, 10, 10]"}',
               bbox=[0, 0, 10, 20]) == pytest.approx(0.5 * 1 + 0.5 * 0.5)


def test_ocrbench_overall_is_the_mean_of_capability_means():
    examples = [{"id": "a", "ocr_type": "text recognition en"},
                {"id": "b", "ocr_type": "text recognition en"},
                {"id": "c", "ocr_type": "math QA en"}]
    records = [{"id": "a", "score": 1.0}, {"id": "b", "score": 0.0}, {"id": "c", "score": 1.0}]
    overall, extra = bm.ocrbench_overall(examples, records)
    assert overall == pytest.approx((0.5 + 1.0) / 2)  # not 2/3, the mean over rows
    assert extra["capabilities"] == {"mathematical_calculation": 1.0, "text_recognition": 0.5}


# ---------------------------------------------------------------------------------------------------------
# BenchJudge prompts: verbatim upstream texts (sha256 of json.dumps(value, sort_keys=True, ensure_ascii=False)
# of the upstream value: MM-Vet mm-vet_evaluator.py `prompt`; CharXiv src/constants.py; MMVU
# utils/eval_utils.py)

UPSTREAM_DIGESTS = {
    "MMVET_PROMPT": "6f3f88a425f3d8aff8320fea2b43593c23da0c55fcfbc9a55c736e4e44bbca6f",
    "DESCRIPTIVE_RESP_INST": "4a22037683ecffb95ee5e7c55a745fa2fb6384d6b62a08f3da6e969e77009e85",
    "DESCRIPTIVE_GRADING_PREFIX": "574a312c336ffdff0a26583d45d8108c85c03ee238db0215ae9fdb1c623da587",
    "DESCRIPTIVE_GRADING_QMAP": "f35f98e51bc3ba53ad632570a34e74e1f416ddad9def85ec877a8c2259d8985d",
    "DESCRIPTIVE_GRADING_ICL": "7eae4bc6bf96649641274a9f4398916e5923986a6a9f4801217e80d009ed856e",
    "REASONING_GRADING_PREFIX": "942930e90eba784f3da369a9cceeef0912fed3d434bb7dc1c025e326051a4dcd",
    "REASONING_GRADING_INST": "d3f046199f9b13d09ed286ce35f76f3818aa353b49b7860470353c543fa67f6b",
    "MMVU_MULTI_CHOICE_INSTRUCTION": "e0bc5c410cb327cb301c9a187ecd32b75e16102376b105911e9b7ac3d64a8a19",
    "MMVU_OPEN_ENDED_INSTRUCTION": "a778bf5348252234ebbaa4559addd7db0fe91e9998ee1baf11b962fc611cfd3a",
}


@pytest.mark.parametrize("name", sorted(UPSTREAM_DIGESTS))
def test_judge_prompts_are_the_upstream_texts(name):
    value = getattr(bench_prompts, name)
    digest = hashlib.sha256(json.dumps(value, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
    assert digest == UPSTREAM_DIGESTS[name]


def test_bench_judge_prompts_are_filled_as_upstream_builds_them():
    ex = {"stem": "What is x?", "answer": "-1<AND>-5"}
    prompt = bm.mmvet_prompt(ex, "<think>hmm</think>x = -1 or x = -5")
    assert prompt.startswith(bench_prompts.MMVET_PROMPT + "\n")
    assert prompt.endswith("\nWhat is x? | -1 <AND> -5 | x = -1 or x = -5 | ")
    assert bm.parse_mmvet("<think>close</think>0.5", ex) == {"score": 0.5, "extracted": "0.5"}
    assert bm.parse_mmvet("1.3", ex) is None and bm.parse_mmvet("correct", ex) is None
    ex = {"stem": "Which curve is highest?", "answer": "P56", "inst_category": 1}
    prompt = bm.charxiv_reasoning_prompt(ex, "It is P56.")
    assert prompt.startswith(bench_prompts.REASONING_GRADING_PREFIX)
    assert ("* Question: Which curve is highest?\n    * Ground Truth: P56\n    * Response: It is P56."
            in prompt)
    assert "<|" not in prompt
    assert bm.parse_charxiv_reasoning('{"extracted_answer": "P56", "score": 1}', ex)["score"] == 1.0
    assert bm.parse_charxiv_reasoning('{"extract_answer": "P5", "score": 0}', ex)["score"] == 0.0
    assert bm.parse_charxiv_reasoning('{"extracted_answer": "P5", "score": 0.5}', ex) is None
    ex = {"template": 11, "answer": "Yes"}
    prompt = bm.charxiv_descriptive_prompt(ex, "Yes, two lines cross.")
    assert "You will be given 1 pairs" in prompt and "Overarching Question: Do any lines intersect?" in prompt
    assert ("['extract_answer_T1', 'score_T1']" in prompt
            and bench_prompts.DESCRIPTIVE_GRADING_ICL["bool"] in prompt)
    assert prompt.endswith("T1:\nResponse 1: Yes, two lines cross.\nGround Truth 1: Yes\n\n")
    assert bm.parse_charxiv_descriptive('{"extract_answer_T1": "Yes", "score_T1": 1}', ex)["score"] == 1.0


# ---------------------------------------------------------------------------------------------------------
# the ten VLM benchmarks end to end on local rows in their hub layouts


def local_rows(images):
    """name -> rows in the hub set's own columns (an image column holds a file path in a local file)."""
    img = images[0]
    rows = {
        "babyvision": [
            {"taskId": 1, "image": img, "question": "Which shape is red?", "ansType": "choice",
             "options": ["circle", "square"], "choiceAns": 1, "blankAns": None, "type": "t", "subtype": "s"},
            {"taskId": 2, "image": img, "question": "How many dots?", "ansType": "blank", "options": [],
             "choiceAns": None, "blankAns": "a red triangle", "type": "t", "subtype": "s"}],
        "charxiv": [
            {"figure_path": "1.jpg", "image": img, "reasoning_q": "Which label is largest?",
             "reasoning_a": "P56", "reasoning_q_source": 1, "descriptive_q1": 1, "descriptive_a1": "Growth",
             "descriptive_q2": 11, "descriptive_a2": "No", "descriptive_q3": 18, "descriptive_a3": "1 by 2",
             "descriptive_q4": 2, "descriptive_a4": "time", "subplot_loc": None, "subplot_row": 1,
             "subplot_col": 2}],
        "dynamath": [
            {"id": 5, "question": "What is the area?", "image": "images/5.png", "decoded_image": img,
             "ground_truth": "12", "answer_type": "float", "subject": "geometry",
             "knowledge_level": "high school", "config": "sample_variant1"},
            {"id": 5, "question": "What is the area?", "image": "images/5.png", "decoded_image": img,
             "ground_truth": "14", "answer_type": "float", "subject": "geometry",
             "knowledge_level": "high school", "config": "sample_variant2"}],
        "embspatial": [
            {"question_id": "e1", "image": img, "question": "What is left of the chair?",
             "answer_options": ["table", "lamp", "bed", "door"], "answer": 2, "relation": "left",
             "data_source": "mp3d"}],
        "infovqa": [
            {"questionId": 9, "question": "Which year?", "answers": ["2019", "in 2019"], "image": img,
             "answer_type": ["image span"], "data_split": "val"}],
        "mmvet": [
            {"question_id": "v1", "image": img, "question": "What is x in the equation?",
             "answer": "-1<AND>-5", "image_source": "x", "capability": ["ocr", "math"]}],
        "ocrbench_v2_en": [
            {"id": 1, "dataset_name": "a", "type": "text recognition en", "question": "What text is shown?",
             "answers": ["STOP"], "eval": "None", "image": img},
            {"id": 2, "dataset_name": "b", "type": "text counting en", "question": "How many words?",
             "answers": ["10"], "eval": "regression", "image": img},
            {"id": 3, "dataset_name": "c", "type": "full-page OCR en", "question": "Read all.",
             "answers": ["x"], "eval": "None", "image": img},
            {"id": 4, "dataset_name": "d", "type": "cognition VQA cn", "question": "是什么?",
             "answers": ["猫"], "eval": "None", "image": img}],
        "ocrbench_v2_cn": [
            {"id": 4, "dataset_name": "d", "type": "cognition VQA cn", "question": "图中是什么?",
             "answers": ["猫"], "eval": "None", "image": img}],
        "visualpuzzles": [
            {"id": "p1", "category": "algorithmic", "image": img, "question": "Which comes next?",
             "options": ["1", "2", "3", "4"], "answer": "C"},
            {"id": "p2", "category": "spatial", "image": img, "question": "Which piece fits?",
             "options": None, "answer": "B"}],
        "vlmsareblind": [
            {"task": "Touching Circles", "image": img,
             "prompt": "Are the two circles touching each other? Answer with Yes/No.", "groundtruth": "No",
             "metadata": "{}"},
            {"task": "Line Plot Intersections", "image": img,
             "prompt": "How many times do the blue and red lines intersect? Answer with a number in curly "
                       "brackets, e.g., {3}.", "groundtruth": "{2}", "metadata": "{}"}],
    }
    rows["charxiv_descriptive"] = rows["charxiv"]  # the same hub rows, their descriptive questions
    return rows


class VisionEngine(ScriptedEngine):
    """A scripted student that counts as a vision-language one (its tokenizer has an image processor)."""
    tokenizer = type("T", (), {"image_processor": object()})()


def write_local(folder, rows):
    for name, rs in rows.items():
        with open(os.path.join(folder, f"{name}.jsonl"), "w") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rs)


def test_local_rows_in_hub_layouts_become_the_right_questions(tmp_path, images):
    write_local(str(tmp_path), local_rows(images))
    load = lambda name: bd.load_benchmark(name, str(tmp_path), vision=True)
    (choice, blank), _ = load("babyvision")
    assert (choice["answer"] == "B" and choice["question"].endswith("A. circle\nB. square")
            and choice["images"])
    assert (blank["route"], blank["answer"]) == ("rule", "a red triangle")
    (cx,), _ = load("charxiv")
    assert (cx["route"], cx["stem"], cx["answer"], cx["inst_category"]) == \
        ("charxiv_reasoning", "Which label is largest?", "P56", 1)
    desc, _ = load("charxiv_descriptive")
    assert [d["template"] for d in desc] == [1, 11, 18, 2] and len({d["id"] for d in desc}) == 4
    assert desc[0]["question"].startswith("For the subplot at row 1 and column 2, what is its title?")
    assert desc[2]["question"].startswith("What is the layout of the subplots?")
    dyn, _ = load("dynamath")
    # a seed's variants stay apart
    assert [d["id"] for d in dyn] == ["sample_variant1:5", "sample_variant2:5"]
    (emb,), _ = load("embspatial")
    assert emb["answer"] == "C"
    (info,), _ = load("infovqa")
    assert info["answer"] == ["2019", "in 2019"] and info["route"] == "anls"
    en, skipped = load("ocrbench_v2_en")
    assert [e["ocr_type"] for e in en] == ["text recognition en", "text counting en"]
    assert skipped == {"no scorer here: full-page OCR en": 1, "cn rows (the other OCRBench v2 benchmark)": 1}
    (vp1, vp2), _ = load("visualpuzzles")
    assert (vp1["answer"] == "C" and "D. 4" in vp1["question"]
            and (vp2["answer"], vp2["route"]) == ("B", "choice"))
    (touch, lines), _ = load("vlmsareblind")
    assert touch["question"] == "Are the two circles touching each other? Answer with Yes/No."
    assert (lines["question"] == "How many times do the blue and red lines intersect?"
            and lines["answer"] == "2")
    # a text-only student cannot see them
    _, skipped = bd.load_benchmark("mmvet", str(tmp_path), vision=False)
    assert skipped == {"image": 1}


def test_every_new_vlm_benchmark_is_scored_by_its_protocol(tmp_path, images):
    write_local(str(tmp_path), local_rows(images))
    answers = {"Which shape is red?": "B", "How many dots?": "red triangle", "Which label is largest?": "P56",
               "What is the area?": "12", "What is left of the chair?": "C", "Which year?": "2019.",
               "What is x in the equation?": "x = -1", "What text is shown?": "STOP sign",
               "How many words?": "8", "图中是什么?": "一只猫", "Which comes next?": "A",
               "Which piece fits?": "B", "Are the two circles touching": "No", "How many times": "3",
               "what is its title": "Growth"}

    def student(prompt, k):
        text = prompt["text"] if isinstance(prompt, dict) else prompt
        return next((f"<think>...</think>\\boxed{{{a}}}" for q, a in answers.items() if q in text), "no idea")

    def judge_reply(prompt, k):
        if prompt.startswith(bench_prompts.MMVET_PROMPT):
            return "<think>half</think>0.5"
        if "Which label is largest?" in prompt:
            return '{"extracted_answer": "P56", "score": 1}'
        if "Overarching Question" in prompt:
            return "not json"  # a failed judge reply: that row's verdict, counted
        return '{"verdict": "correct"}' if "red triangle" in prompt else '{"verdict": "wrong"}'

    judge = ScriptedEngine(judge_reply)
    # the image ones (videos: test_video)
    names = [n for n, spec in bm.SPECS.items() if spec["family"] != "video"]
    summary = ev.run_benchmarks(VisionEngine(student), names, judge=judge, data_dir=str(tmp_path),
                                log=lambda *_: None)
    assert summary["errors"] == {}
    acc = {n: r["accuracy"] for n, r in summary["benchmarks"].items()}
    assert acc["babyvision"] == 1.0            # the letter by rule, the free-form gold by the judge
    assert acc["charxiv"] == 1.0
    assert acc["dynamath"] == 0.5              # variant 2's gold is 14
    assert acc["embspatial"] == 1.0
    assert acc["infovqa"] == pytest.approx(1 - 1 / 5)  # ANLS of "2019." against "2019"
    assert acc["mmvet"] == 0.5
    assert acc["ocrbench_v2_en"] == pytest.approx((1.0 + 0.8) / 2)  # two capabilities, one row each
    assert acc["ocrbench_v2_cn"] == 1.0
    assert acc["visualpuzzles"] == 0.5
    assert acc["vlmsareblind"] == 0.5
    desc = summary["benchmarks"]["charxiv_descriptive"]
    assert desc["judge_malformed"] == 4 and desc["accuracy"] == 0.0
    assert summary["benchmarks"]["infovqa"]["judged"] == 0  # Det.: never the judge
    assert summary["benchmarks"]["ocrbench_v2_en"]["question_mean"] == pytest.approx(0.9)


def test_the_new_benchmarks_run_end_to_end_on_a_tiny_vlm(tiny_vlm, images, tmp_path):
    from rollout import TransformersEngine, load_model

    write_local(str(tmp_path), local_rows(images))
    model, tok = load_model(tiny_vlm, pixels=(1024, 4096))
    engine = TransformersEngine(model.eval(), tok)
    names = [n for n, spec in bm.SPECS.items() if spec["family"] == "vlm"]
    summary = ev.run_benchmarks(engine, names, data_dir=str(tmp_path), max_new_tokens=3, log=lambda *_: None)
    assert summary["errors"] == {}
    assert set(summary["benchmarks"]) == set(names)
    for name, r in summary["benchmarks"].items():
        assert 0.0 <= r["accuracy"] <= 1.0 and r["questions"] >= 1, name


def test_family_macro_names_the_benchmarks_it_lacks():
    results = {"ai2d": {"family": "vlm", "accuracy": 0.5}, "mmvet": {"family": "vlm", "accuracy": 1.0},
               "gsm8k": {"family": "math", "accuracy": 0.0}}
    summary = ev.summarize(results, {})
    assert summary["macro"]["vlm"] == 0.75 and summary["macro_over"]["vlm"] == 2
    absent = summary["macro_missing"]["vlm"]
    assert len(absent) == 14 and "ai2d" not in absent and "ocrbench_v2_cn" in absent
    assert set(summary["macro_missing"]) == {"vlm"}  # no paper family for math; llm and video are not present
    full = ev.summarize({n: {"family": "vlm", "accuracy": 1.0} for n in bd.paper_families()["vlm"]}, {})
    assert full["macro_missing"] == {} and full["macro_over"]["vlm"] == 16


def test_list_shows_every_benchmark_with_family_source_and_protocol():
    import subprocess
    import sys

    from conftest import ROOT

    out = subprocess.run([sys.executable, "eval.py", "--list"], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    rows = [line.split(" | ") for line in out.stdout.splitlines()
            if line.startswith("| ") and "---" not in line][1:]
    listed = {r[0].lstrip("| "): (r[1], r[2], r[3].rstrip(" |")) for r in rows}
    assert set(listed) == set(bd.BENCHMARKS)
    assert listed["infovqa"] == ("vlm", "lmms-lab/DocVQA config InfographicVQA, split validation", "Det.")
    assert listed["ceval"] == ("llm", "ceval/ceval-exam (52 configs), split val", "Exact+Judge")
    families = {fam: len(names) for fam, names in bd.paper_families().items()}
    assert families == {"vlm": 16, "llm": 10, "video": 5}
    assert sum(listed[n][0] in families for n in listed) == 31
    assert listed["mvbench"] == ("video", "OpenGVLab/MVBench (20 configs), split train", "Rule+Judge")
    assert "paper families: vlm 16, llm 10, video 5" in out.stdout


def test_hub_path_dynamath_reads_its_ten_variant_splits_and_a_missing_one_fails_alone_naming_it(
        fake_hub, images, tmp_path, monkeypatch):  # noqa: F811 (fake_hub: the fixture imported above)
    from PIL import Image

    monkeypatch.setenv("HOME", str(tmp_path))  # hub images are written under ~/.cache/zppo/images
    table, asked = fake_hub
    hub = "DynaMath/DynaMath_Sample"
    pic = Image.open(images[1])
    for k, split in enumerate(bm.DYNAMATH_SPLITS):
        table[(hub, None, split)] = [{"id": 7, "question": "Area?", "image": "images/7.png",
                                      "decoded_image": pic, "ground_truth": str(k), "answer_type": "float",
                                      "subject": "g", "knowledge_level": "h"}]
    examples, skipped = bd.load_benchmark("dynamath", vision=True)
    assert asked == [(hub, None, s) for s in bm.DYNAMATH_SPLITS] and skipped == {}
    assert [e["id"] for e in examples] == [f"{s}:7" for s in bm.DYNAMATH_SPLITS]
    assert ([e["answer"] for e in examples] == [str(k) for k in range(10)]
            and os.path.exists(examples[0]["images"][0]))
    del table[(hub, None, "sample_variant7")]
    summary = ev.run_benchmarks(VisionEngine(lambda p, k: "\\boxed{0}"), ["dynamath", "embspatial"],
                                log=lambda *_: None)
    assert "split sample_variant7" in summary["errors"]["dynamath"] and "DynaMath/DynaMath_Sample" in \
        summary["errors"]["dynamath"]
    # each fails alone, naming what was asked
    assert "FlagEval/EmbSpatial-Bench" in summary["errors"]["embspatial"]
