"""The benchmarks/ package's VLM benchmarks: the Det. scorers (det.py, ocrbench.py) against hand-computed
cases, the BenchJudge prompts (prompts.py) against digests of their upstream texts, and the paper's VLM
benchmarks end to end on local rows in each hub set's own columns."""
import hashlib
import json
import os

import pytest

import eval as ev
from benchmarks import (
    BENCHMARKS,
    DYNAMATH_SPLITS,
    charxiv,
    det,
    load,
    mmvet,
    ocrbench,
    paper_families,
    prompts,
    score,
)
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
    assert det.anls(pred, golds) == pytest.approx(expected)


def test_det_scorers_read_the_final_answer_never_the_thinking():
    """docs/EVAL.md: only the judge may look inside the reasoning: a Det. metric reads the final answer's box,
    else the final answer itself; a box written only inside <think> is no answer (was: scored 1)."""
    ex = {"answer": ["42 percent"]}
    assert det.score_anls("<think>maybe 40 percent</think> It is \\boxed{42 percent}.", ex) == 1.0
    assert det.score_anls("<think>\\boxed{42 percent}</think>", ex) == 0.0
    assert det.score_anls("<think>\\boxed{42 percent}</think> 42 percent", ex) == 1.0  # the reply itself
    assert det.score_anls("<think>42 percent</think>40 percent", ex) == pytest.approx(1 - 1 / 10)
    assert det.score_anls("<think>\\boxed{42 percent} but the page is long", ex) == 0.0  # never closed


def test_det_scorers_read_a_long_boxed_answer_whole():
    """Was: a box over 1,000 characters was not read, so an OCR page, a table or a document was scored with
    the prose around it. Upstream (OCRBench v2 eval_scripts/eval.py) scores the answer alone: a document
    parsed into exactly the gold tree scores 1 (STEDS), with the reply's prose lines as extra nodes less."""
    page = " ".join(f"word{i}" for i in range(400))  # 3,000 characters
    assert len(page) > 1_000 and det.final_answer(f"Here is the page: \\boxed{{{page}}} Done.") == page
    doc = "# Intro\n" + "\n".join(f"line {i} of the document text" for i in range(60))
    assert len(doc) > 1_000
    example = {"answer": [doc], "ocr_type": "document parsing en", "ocr_eval": None}
    reply = f"<think>...</think>Here is the parsed document.\n\\boxed{{{doc}}}\nThat is all."
    assert ocrbench.score_ocrbench(reply, example) == 1.0
    assert ocrbench.doc_parsing_score(reply.split("</think>")[1], doc) < 0.95  # what was scored before


# ---------------------------------------------------------------------------------------------------------
# OCRBench v2's scorer, per task type


def ocr(kind, answers, pred, method=None, **extra):
    example = {"answer": answers, "ocr_type": kind, "ocr_eval": method, **extra}
    return ocrbench.OCR_TYPES[kind][1](pred, example)


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
    overall, extra = ocrbench.ocrbench_overall(examples, records)
    assert overall == pytest.approx((0.5 + 1.0) / 2)  # not 2/3, the mean over rows
    assert extra["capabilities"] == {"mathematical_calculation": 1.0, "text_recognition": 0.5}


# ---------------------------------------------------------------------------------------------------------
# OCRBench v2's text metrics (nltk, jieba), TEDS (apted, lxml), STEDS (zss) and text spotting, by hand


class StandInWordNet:
    """NLTK's WordNet data (METEOR's synonym stage) is no PyPI package and cannot be installed here: this
    stand-in reader knows no synonyms (meteor_score's `wordnet=` argument), so METEOR matches exact words and
    Porter stems only, which the hand computations below assume."""

    def synsets(self, word):
        return []


def test_ocrbench_text_metric_bleu_meteor_f_and_edit_by_hand():
    # gold "the cat sat on the mat", prediction "the cat sat on a mat" (whitespace tokens: no CJK character)
    # BLEU: clipped n-gram precisions 5/6, 3/5, 2/4, 1/3, equal lengths (no brevity penalty):
    #   (5/6 * 3/5 * 2/4 * 1/3) ** (1/4) = (1/12) ** 0.25
    # METEOR (alpha 0.9, beta 3, gamma 0.5): 5 of 6 words match each way (P = R = 5/6, so Fmean = 5/6); the
    #   hypothesis' "the" pairs with the reference's last "the" (nltk matches from the end), so the alignment
    #   (0,4) (1,1) (2,2) (3,3) (5,5) has 3 chunks over 5 matches: penalty 0.5 * (3/5) ** 3 = 0.108
    # F-measure of the sets {the, cat, sat, on, mat} and {the, cat, sat, on, a, mat}: P 5/6, R 1 -> 1/1.1
    # edit distance of the characters: "a" -> "the" is 3 edits over the longer length 22
    bleu, meteor, f, edit = (1 / 12) ** 0.25, (1 - 0.108) * 5 / 6, 1 / 1.1, 3 / 22
    m = ocrbench.ocr_text_metrics("the cat sat on a mat", "the cat sat on the mat", StandInWordNet())
    assert (m["bleu"], m["meteor"], m["f_measure"], m["edit_dist"]) == \
        (pytest.approx(bleu), pytest.approx(meteor), pytest.approx(f), pytest.approx(edit))
    assert ocrbench.ocr_text_score("the cat sat on a mat", ["the cat sat on the mat"], StandInWordNet()) == \
        pytest.approx((bleu + meteor + f + 1 - edit) / 4)
    # Chinese: jieba's tokens (its README's example: 我 / 来到 / 北京 / 清华大学); identical texts of 4 tokens
    # score BLEU 1, METEOR 1 - 0.5 * (1/4) ** 3 (one chunk over 4 matches), F 1, edit 0. Without jieba the
    # text would be one whitespace token and score (0 + 0.5 + 1 + 1) / 4.
    assert ocrbench.ocr_text_score("我来到北京清华大学", ["我来到北京清华大学"], StandInWordNet()) == \
        pytest.approx((1 + (1 - 0.5 / 64) + 1 + 1) / 4)
    # three identical words: no 4-gram, so unsmoothed BLEU is ~0; METEOR 1 - 0.5 * (1/3) ** 3
    assert ocrbench.ocr_text_score("STOP here now", ["STOP here now"], StandInWordNet()) == \
        pytest.approx((0 + (1 - 0.5 / 27) + 1 + 1) / 4)
    # an empty prediction scores 0; a blank one: BLEU, METEOR 0, F of an empty set None -> 0, edit 3/3
    assert ocrbench.ocr_text_score("", ["abc"], StandInWordNet()) == 0.0
    assert ocrbench.ocr_text_score("   ", ["abc"], StandInWordNet()) == 0.0


def test_wordnet_is_looked_up_once_and_its_absence_skips_the_meteor_types(monkeypatch):
    import nltk.corpus

    calls = []

    class Missing:
        def ensure_loaded(self):
            calls.append(1)
            raise LookupError("Resource wordnet not found.")

    monkeypatch.setattr(nltk.corpus, "wordnet", Missing())
    ocrbench.nltk_wordnet.cache_clear()
    try:
        assert ocrbench.nltk_wordnet() is None and ocrbench.nltk_wordnet() is None
        assert calls == [1]  # cached: one look-up, not one per row
    finally:
        ocrbench.nltk_wordnet.cache_clear()
    spec = {"language": "cn"}
    rows = {"full-page OCR cn": "读出所有文字", "text translation cn": "翻译",
            "handwritten answer extraction cn": "简答：写出答案"}
    monkeypatch.setattr(ocrbench, "nltk_wordnet", lambda: None)
    fix = "(METEOR needs NLTK's WordNet data: python -m nltk.downloader wordnet)"
    got = [ocrbench.convert_ocrbench({"type": t, "question": q, "answers": ["猫"]}, spec, "w")
           for t, q in rows.items()]
    assert got == [f"no scorer here: full-page OCR cn {fix}", f"no scorer here: text translation cn {fix}",
            f"no scorer here: handwritten answer extraction cn (short answer) {fix}"]
    # the choice questions of the same type need no METEOR
    row = {"type": "handwritten answer extraction cn", "question": "选择题", "answers": ["A"]}
    got = ocrbench.convert_ocrbench(row, spec, "w")
    assert got["ocr_type"] == "handwritten answer extraction cn" and "short_answer" not in got
    monkeypatch.setattr(ocrbench, "nltk_wordnet", lambda: StandInWordNet())
    got = ocrbench.convert_ocrbench({"type": "full-page OCR cn", "question": "读", "answers": ["猫"]}, spec,
                                    "w")
    assert got["answer"] == ["猫"]


def test_teds_of_small_tables_by_hand():
    gold = "<table><tr><td>ab</td><td>cd</td></tr></table>"
    # one cell differs: its tokens c,d vs c,e are 1 edit over 2; 3 elements under <table> (tr, td, td)
    assert ocrbench.teds(ocrbench.wrap_html_table("<table><tr><td>ab</td><td>ce</td></tr></table>"),
                   ocrbench.wrap_html_table(gold)) == pytest.approx(1 - 0.5 / 3)
    # table parsing (html): the table is cut from the prose around it; no table at all scores 0
    assert ocr("table parsing en", [gold], "Here it is:\n<table><tr><td>ab</td><td>ce</td></tr></table>",
               table_format="html") == pytest.approx(1 - 0.5 / 3)
    assert ocr("table parsing en", [gold], "| ab | cd |", table_format="html") == 0.0
    assert ocr("table parsing cn", [gold], gold, table_format="html") == 1.0
    # an element inside a cell: tokens <b>, x, </b> vs x (2 edits over 3), and upstream's count of elements
    # under <table> includes the <b> (3, not 2): 1 - (2/3) / 3
    assert ocrbench.html_table_score("<table><tr><td>x</td></tr></table>",
                               "<table><tr><td><b>x</b></td></tr></table>") == pytest.approx(1 - (2 / 3) / 3)
    # a row more than the gold: insert tr and td (2) over the larger count 4
    assert ocr("table parsing cn", ["<table><tr><td>北京</td></tr></table>"],
               "<table><tr><td>北京</td></tr><tr><td>上海</td></tr></table>", table_format="html") == 0.5
    # a colspan differs: the rename costs 1 whatever the content (1 - 1/2)
    assert ocrbench.html_table_score('<table><tr><td colspan="2">a</td></tr></table>',
                               "<table><tr><td>a</td></tr></table>") == 0.5


def test_teds_of_markdown_tables_by_hand():
    gold = "| a | b |\n| --- | --- |\n| 1 | 2 |"  # header and one row: 2 tr + 4 td under <table>
    assert ocrbench.markdown_table_html(gold) == \
        "<html><body><table><tr><td>a</td><td>b</td></tr><tr><td>1</td><td>2</td></tr></table></body></html>"
    # the header only: 3 of the gold's 6 elements inserted
    assert ocr("table parsing en", [gold], "| a | b |\n| --- | --- |", table_format="markdown") == 0.5
    assert ocr("table parsing en", [gold], "| a | b |\n|---|---|\n| 1 | 3 |", table_format="markdown") == \
        pytest.approx(1 - 1 / 6)  # one cell, one token of one differs
    assert ocr("table parsing en", [gold], "```markdown\n" + gold + "\n```", table_format="markdown") == 1.0
    # the second line is dropped as the separator whatever it holds (upstream's), so without one a row is lost
    assert ocr("table parsing en", [gold], "| a | b |\n| 1 | 2 |", table_format="markdown") == 0.5


def test_teds_of_a_chart_dict_by_hand():
    gold = ocrbench.chart_gold('{"Sales": 10, "Cost": 5}', "w")  # the hub serves the dict as JSON text
    assert gold == {"Sales": 10, "Cost": 5}
    # dict_to_html writes a value's characters space-separated: "1 0" vs "1 2", one edit over 3 tokens, in a
    # table of 2 tr + 4 td: 1 - (1/3) / 6
    assert ocrbench.chart_score("{'Sales': 12, 'Cost': 5}", gold) == pytest.approx(1 - 1 / 18)
    fenced = "```python\ndata = {'Sales': 10, 'Cost': 5}  # from the bars\n```"
    assert ocrbench.chart_score(fenced, gold) == 1.0
    assert ocrbench.chart_score("Sales are 10 and costs 5", gold) == 0.0  # no dict
    # a key missing: its tr and two td deleted, 3 of the gold's 6 elements
    assert ocr("chart parsing en", ['{"Sales": 10, "Cost": 5}'], "{'Sales': 10}", chart_gold=gold) == 0.5


def test_steds_of_document_trees_by_hand():
    # ROOT(TITLE, " Intro"(Hello, World)) has 5 nodes; the prediction lacks one: 1 insertion over 5
    assert ocr("document parsing en", ["# Intro\nHello\nWorld"], "# Intro\nHello") == pytest.approx(0.8)
    # relabelling two non-blank labels costs 0: only the structure counts
    assert ocr("document parsing cn", ["# 简介\n你好"], "# 概述\n再见") == 1.0
    # a paragraph under the wrong heading: ROOT(TITLE, Intro(a, b)) vs ROOT(TITLE, Intro(a), Methods(b)) --
    # at most 4 nodes can be mapped keeping ancestry, so (5 - 4) + (6 - 4) = 3 edits over 6
    assert ocrbench.doc_parsing_score("# Intro\nHello world\nWe test.",
                                "# Intro\nHello world\n# Methods\nWe test.") == pytest.approx(0.5)
    # upstream's label distance is 1 when either label is blank, so even two identical blank lines cost 1
    assert ocrbench.doc_parsing_score("# A\n\nx", "# A\n\nx") == pytest.approx(1 - 1 / 5)
    # pre_clean: "*" and "_" become spaces (labels stay non-blank); a line of "**" alone becomes blank
    assert ocrbench.doc_pre_clean("**bold** x_y") == "  bold   x y"


def test_text_spotting_by_hand():
    row = {"bbox_list": [[0, 0, 100, 0, 100, 50, 0, 50], [200, 200, 300, 210, 290, 250, 205, 240]],
           "content": ["HELLO", "WORLD"]}
    gold = ocrbench.spotting_gold(row, "w")  # each polygon's bounding rectangle
    assert gold == [[0, 0, 100, 50, "HELLO"], [200, 200, 300, 250, "WORLD"]]

    def spot(text):
        return ocr("text spotting en", [], text, spot_gold=gold)

    # one box matched with its text (case ignored), one matching nothing: precision 1/2, recall 1/2
    assert spot("[[0, 0, 100, 50, 'hello'], [500, 500, 600, 600, 'world']]") == pytest.approx(0.5)
    assert spot("(0, 0, 100, 50, hello) and (200, 200, 300, 250, world)") == 1.0  # read by the pattern
    # IoU 40/50 = 0.8 matches; 25/50 = 0.5 is not above the threshold
    assert spot("[[0, 0, 100, 40, 'HELLO']]") == pytest.approx(2 * 1 * 0.5 / 1.5)
    assert spot("[[0, 0, 100, 25, 'HELLO']]") == 0.0
    # a wrong transcription uses the pair up: the second box on the same place finds no unmatched gold
    assert spot("[[0, 0, 100, 50, 'HELL'], [0, 0, 100, 50, 'HELLO']]") == 0.0
    # the gold may carry one special character at either end, no more
    def one(gold_text, text):
        return ocr("text spotting en", [], f"[[0, 0, 100, 50, '{text}']]",
                   spot_gold=[[0, 0, 100, 50, gold_text]])

    assert one("(HELLO)", "hello") == 1.0 and one("HELLO.", "hello") == 1.0
    assert one("(HELLO)", "hello)") == 1.0
    assert one("HELLO!!", "hello") == 0.0 and one("HELLO", "hello.") == 0.0  # the detection's stay
    # "###" is don't-care: neither it nor a detection mostly inside it counts
    care = [[0, 0, 100, 50, "HELLO"], [200, 200, 300, 250, "###"]]
    assert ocr("text spotting en", [], "[[0, 0, 100, 50, 'hello'], [210, 210, 290, 240, 'x']]",
               spot_gold=care) == 1.0
    # boxes outside 0..1000 or upside down are dropped; nothing left scores 0
    assert spot("[[0, 0, 1001, 50, 'hello'], [100, 0, 0, 50, 'hello']]") == 0.0
    assert spot("no boxes") == 0.0


def ocr_rows(img):
    """OCRBench v2 rows of the types scored by the text metrics, TEDS, STEDS and spotting, in the hub layout
    (ling99/OCRBench_v2: dict answers as JSON text, spotting polygons in bbox_list with content)."""
    def row(i, kind, question, answers, **extra):
        return {"id": i, "dataset_name": "d", "type": kind, "question": question, "answers": answers,
                "eval": "None", "image": img, "bbox": None, "bbox_list": None, "content": None, **extra}

    en = [row(1, "full-page OCR en", "Read all the text in the image.", ["the cat sat on the mat"]),
          row(2, "fine-grained text recognition en", "Read the words in the red box.", ["STOP here now"]),
          row(3, "table parsing en", "Convert the table to html.",
              ["<table><tr><td>ab</td><td>cd</td></tr></table>"]),
          row(4, "table parsing en", "Give the table in markdown.", ["| a | b |\n| --- | --- |\n| 1 | 2 |"]),
          row(5, "chart parsing en", "Extract the chart as a dict.", ['{"Sales": 10, "Cost": 5}']),
          row(6, "document parsing en", "Parse the document.", ["# Intro\nHello\nWorld"]),
          row(7, "text spotting en", "Spot every word.", ["HELLO", "WORLD"],
              bbox_list=[[0, 0, 100, 0, 100, 50, 0, 50], [200, 200, 300, 200, 300, 250, 200, 250]],
              content=["HELLO", "WORLD"])]
    cn = [row(11, "full-page OCR cn", "读出图中全部文字", ["我来到北京清华大学"]),
          row(12, "text translation cn", "把图中的话翻译成英文", ["the cat sat on the mat"]),
          row(13, "table parsing cn", "把表格转为html", ["<table><tr><td>北京</td></tr></table>"]),
          row(14, "document parsing cn", "解析这份文档", ["# 简介\n你好"]),
          row(15, "handwritten answer extraction cn", "简答：图中是什么动物", ["猫"]),
          row(16, "handwritten answer extraction cn", "选择题：选出正确答案", ["AC"])]
    return en, cn


OCR_REPLIES = {"Read all the text": "the cat sat on a mat", "Read the words": "STOP here now",
               "to html": "Sure:\n<table><tr><td>ab</td><td>ce</td></tr></table>",
               "in markdown": "| a | b |\n| --- | --- |", "as a dict": "{'Sales': 12, 'Cost': 5}",
               "Parse the document": "# Intro\nHello",
               "Spot every word": "[[0, 0, 100, 50, 'hello'], [500, 500, 600, 600, 'world']]",
               "读出图中": "我来到北京清华大学", "翻译": "the cat sat on a mat",
               "把表格": "<table><tr><td>北京</td></tr><tr><td>上海</td></tr></table>",
               "解析": "# 概述\n再见",
               "简答": "猫", "选择题": "A、C"}


def run_ocr(tmp_path, images):
    en, cn = ocr_rows(images[0])
    write_local(str(tmp_path), {"ocrbench_v2_en": en + cn, "ocrbench_v2_cn": en + cn})

    def student(prompt, k):
        text = prompt["text"] if isinstance(prompt, dict) else prompt
        return next(f"<think>...</think>{a}" for q, a in OCR_REPLIES.items() if q in text)

    return ev.run_benchmarks(VisionEngine(student), ["ocrbench_v2_en", "ocrbench_v2_cn"],
                             data_dir=str(tmp_path), log=lambda *_: None)


def test_ocrbench_rows_of_the_new_types_are_scored_not_skipped(tmp_path, images, monkeypatch):
    monkeypatch.setattr(ocrbench, "nltk_wordnet", lambda: StandInWordNet())
    summary = run_ocr(tmp_path, images)
    assert summary["errors"] == {}
    en, cn = summary["benchmarks"]["ocrbench_v2_en"], summary["benchmarks"]["ocrbench_v2_cn"]
    assert en["skipped"] == {"cn rows (the other OCRBench v2 benchmark)": 6}
    assert cn["skipped"] == {"en rows (the other OCRBench v2 benchmark)": 7}
    score = {r["id"]: r["score"] for r in en["records"] + cn["records"]}
    # the hand-worked pair of test_ocrbench_text_metric_bleu_meteor_f_and_edit_by_hand
    sentence = ((1 / 12) ** 0.25 + (1 - 0.108) * 5 / 6 + 1 / 1.1 + 1 - 3 / 22) / 4
    expected = {"1": sentence, "2": (0 + (1 - 0.5 / 27) + 1 + 1) / 4, "3": 1 - 0.5 / 3, "4": 0.5,
                "5": 1 - 1 / 18, "6": 0.8, "7": 0.5, "11": (1 + (1 - 0.5 / 64) + 1 + 1) / 4, "12": sentence,
                "13": 0.5, "14": 1.0,
                # one jieba token "猫": BLEU ~0 (no 2-gram), METEOR 1 - 0.5 (a chunk, a match), F 1, edit 0
                "15": (0 + 0.5 + 1 + 1) / 4, "16": 1.0}
    assert score == {k: pytest.approx(v) for k, v in expected.items()}
    # get_score.py's capabilities: translation under knowledge reasoning, the short answer under relationship
    # extraction; the headline is the mean of the capability means
    assert en["capabilities"] == {
        "text_recognition": pytest.approx((expected["1"] + expected["2"]) / 2),
        "element_parsing": pytest.approx(sum(expected[i] for i in "3456") / 4),
        "text_spotting": 0.5}
    assert en["accuracy"] == pytest.approx(sum(en["capabilities"].values()) / 3)
    assert cn["capabilities"] == {"text_recognition": pytest.approx(expected["11"]),
                                  "knowledge_reasoning": pytest.approx(sentence),
                                  "element_parsing": pytest.approx(0.75),
                                  "relationship_extraction": pytest.approx((0.625 + 1.0) / 2)}


def test_ocrbench_meteor_types_are_skipped_and_named_without_wordnet(tmp_path, images, monkeypatch):
    monkeypatch.setattr(ocrbench, "nltk_wordnet", lambda: None)
    summary = run_ocr(tmp_path, images)
    fix = "(METEOR needs NLTK's WordNet data: python -m nltk.downloader wordnet)"
    en, cn = summary["benchmarks"]["ocrbench_v2_en"], summary["benchmarks"]["ocrbench_v2_cn"]
    assert en["skipped"] == {f"no scorer here: full-page OCR en {fix}": 1,
                             f"no scorer here: fine-grained text recognition en {fix}": 1,
                             "cn rows (the other OCRBench v2 benchmark)": 6}
    assert cn["skipped"] == {f"no scorer here: full-page OCR cn {fix}": 1,
                             f"no scorer here: text translation cn {fix}": 1,
                             f"no scorer here: handwritten answer extraction cn (short answer) {fix}": 1,
                             "en rows (the other OCRBench v2 benchmark)": 7}
    # the TEDS, STEDS and spotting types need no WordNet
    assert sorted(r["id"] for r in en["records"]) == ["3", "4", "5", "6", "7"]
    assert set(cn["capabilities"]) == {"element_parsing", "relationship_extraction"}


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
    value = getattr(prompts, name)
    digest = hashlib.sha256(json.dumps(value, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
    assert digest == UPSTREAM_DIGESTS[name]


def test_bench_judge_prompts_are_filled_as_upstream_builds_them():
    ex = {"stem": "What is x?", "answer": "-1<AND>-5"}
    prompt = mmvet.mmvet_prompt(ex, "<think>hmm</think>x = -1 or x = -5")
    assert prompt.startswith(prompts.MMVET_PROMPT + "\n")
    assert prompt.endswith("\nWhat is x? | -1 <AND> -5 | x = -1 or x = -5 | ")
    assert mmvet.parse_mmvet("<think>close</think>0.5", ex) == {"score": 0.5, "extracted": "0.5"}
    assert mmvet.parse_mmvet("1.3", ex) is None and mmvet.parse_mmvet("correct", ex) is None
    ex = {"stem": "Which curve is highest?", "answer": "P56", "inst_category": 1}
    prompt = charxiv.charxiv_reasoning_prompt(ex, "It is P56.")
    assert prompt.startswith(prompts.REASONING_GRADING_PREFIX)
    assert ("* Question: Which curve is highest?\n    * Ground Truth: P56\n    * Response: It is P56."
            in prompt)
    assert "<|" not in prompt
    assert charxiv.parse_charxiv_reasoning('{"extracted_answer": "P56", "score": 1}', ex)["score"] == 1.0
    assert charxiv.parse_charxiv_reasoning('{"extract_answer": "P5", "score": 0}', ex)["score"] == 0.0
    assert charxiv.parse_charxiv_reasoning('{"extracted_answer": "P5", "score": 0.5}', ex) is None
    ex = {"template": 11, "answer": "Yes"}
    prompt = charxiv.charxiv_descriptive_prompt(ex, "Yes, two lines cross.")
    assert "You will be given 1 pairs" in prompt and "Overarching Question: Do any lines intersect?" in prompt
    assert ("['extract_answer_T1', 'score_T1']" in prompt
            and prompts.DESCRIPTIVE_GRADING_ICL["bool"] in prompt)
    assert prompt.endswith("T1:\nResponse 1: Yes, two lines cross.\nGround Truth 1: Yes\n\n")
    reply = '{"extract_answer_T1": "Yes", "score_T1": 1}'
    assert charxiv.parse_charxiv_descriptive(reply, ex)["score"] == 1.0


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
             "reasoning_a": "P56", "reasoning_q_source": 3, "reasoning_a_type": 1, "descriptive_q1": 1,
             "descriptive_a1": "Growth",
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


# the VLM benchmarks whose rows local_rows writes (the others: tests/test_images.py)
LOCAL_VLM = ["babyvision", "charxiv", "dynamath", "embspatial", "infovqa", "mmvet", "ocrbench_v2_en",
             "ocrbench_v2_cn", "visualpuzzles", "vlmsareblind"]


class VisionEngine(ScriptedEngine):
    """A scripted student that counts as a vision-language one (its tokenizer has an image processor)."""
    tokenizer = type("T", (), {"image_processor": object()})()


def write_local(folder, rows):
    for name, rs in rows.items():
        with open(os.path.join(folder, f"{name}.jsonl"), "w") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rs)


def test_local_rows_in_hub_layouts_become_the_right_questions(tmp_path, images, monkeypatch):
    monkeypatch.setattr(ocrbench, "nltk_wordnet", lambda: None)  # as here: NLTK's WordNet is not installed
    write_local(str(tmp_path), local_rows(images))
    get = lambda name: load.load_benchmark(name, str(tmp_path), vision=True)
    (choice, blank), _ = get("babyvision")
    assert (choice["answer"] == "B" and choice["question"].endswith("A. circle\nB. square")
            and choice["images"])
    assert (blank["route"], blank["answer"]) == ("rule", "a red triangle")
    (cx,), _ = get("charxiv")
    assert (cx["route"], cx["stem"], cx["answer"], cx["inst_category"]) == \
        ("charxiv_reasoning", "Which label is largest?", "P56", 1)
    desc, _ = get("charxiv_descriptive")
    assert [d["template"] for d in desc] == [1, 11, 18, 2] and len({d["id"] for d in desc}) == 4
    assert desc[0]["question"].startswith("For the subplot at row 1 and column 2, what is its title?")
    assert desc[2]["question"].startswith("What is the layout of the subplots?")
    dyn, _ = get("dynamath")
    # a seed's variants stay apart
    assert [d["id"] for d in dyn] == ["sample_variant1:5", "sample_variant2:5"]
    (emb,), _ = get("embspatial")
    assert emb["answer"] == "C"
    (info,), _ = get("infovqa")
    assert info["answer"] == ["2019", "in 2019"] and info["route"] == "anls"
    en, skipped = get("ocrbench_v2_en")
    assert [e["ocr_type"] for e in en] == ["text recognition en", "text counting en"]
    assert skipped == {"no scorer here: full-page OCR en (METEOR needs NLTK's WordNet data: python -m "
                       "nltk.downloader wordnet)": 1, "cn rows (the other OCRBench v2 benchmark)": 1}
    (vp1, vp2), _ = get("visualpuzzles")
    assert (vp1["answer"] == "C" and "D. 4" in vp1["question"]
            and (vp2["answer"], vp2["route"]) == ("B", "choice"))
    (touch, lines), _ = get("vlmsareblind")
    assert touch["question"] == "Are the two circles touching each other? Answer with Yes/No."
    assert (lines["question"] == "How many times do the blue and red lines intersect?"
            and lines["answer"] == "2")
    # a text-only student cannot see them
    _, skipped = load.load_benchmark("mmvet", str(tmp_path), vision=False)
    assert skipped == {"image": 1}


def test_every_new_vlm_benchmark_is_scored_by_its_protocol(tmp_path, images, monkeypatch):
    monkeypatch.setattr(ocrbench, "nltk_wordnet", lambda: None)  # the full-page OCR row skipped, as here
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
        if prompt.startswith(prompts.MMVET_PROMPT):
            return "<think>half</think>0.5"
        if "Which label is largest?" in prompt:
            return '{"extracted_answer": "P56", "score": 1}'
        if "Overarching Question" in prompt:
            return "not json"  # a failed judge reply: that row's verdict, counted
        return '{"verdict": "correct"}' if "red triangle" in prompt else '{"verdict": "wrong"}'

    judge = ScriptedEngine(judge_reply)
    # the image ones (videos: test_video)
    names = [*LOCAL_VLM, "charxiv_descriptive"]
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
    from engines.transformers_engine import TransformersEngine
    from models import load_model

    write_local(str(tmp_path), local_rows(images))
    model, tok = load_model(tiny_vlm, pixels=(1024, 4096))
    engine = TransformersEngine(model.eval(), tok)
    names = LOCAL_VLM
    summary = ev.run_benchmarks(engine, names, data_dir=str(tmp_path), max_new_tokens=3, log=lambda *_: None)
    assert summary["errors"] == {}
    assert set(summary["benchmarks"]) == set(names)
    for name, r in summary["benchmarks"].items():
        assert 0.0 <= r["accuracy"] <= 1.0 and r["questions"] >= 1, name


def test_family_macro_names_the_benchmarks_it_lacks():
    results = {"ai2d": {"family": "vlm", "accuracy": 0.5}, "mmvet": {"family": "vlm", "accuracy": 1.0},
               "gsm8k": {"family": "math", "accuracy": 0.0}}
    summary = score.summarize(results, {})
    assert summary["macro"]["vlm"] == 0.75 and summary["macro_over"]["vlm"] == 2
    absent = summary["macro_missing"]["vlm"]
    assert len(absent) == 14 and "ai2d" not in absent and "ocrbench_v2_cn" in absent
    assert set(summary["macro_missing"]) == {"vlm"}  # no paper family for math; llm and video are not present
    full = score.summarize({n: {"family": "vlm", "accuracy": 1.0} for n in paper_families()["vlm"]}, {})
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
    assert set(listed) == set(BENCHMARKS)
    assert listed["infovqa"] == ("vlm", "lmms-lab/DocVQA config InfographicVQA, split validation", "Det.")
    assert listed["ceval"] == ("llm", "ceval/ceval-exam (52 configs), split val", "Exact+Judge")
    families = {fam: len(names) for fam, names in paper_families().items()}
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
    for k, split in enumerate(DYNAMATH_SPLITS):
        table[(hub, None, split)] = [{"id": 7, "question": "Area?", "image": "images/7.png",
                                      "decoded_image": pic, "ground_truth": str(k), "answer_type": "float",
                                      "subject": "g", "knowledge_level": "h"}]
    examples, skipped = load.load_benchmark("dynamath", vision=True)
    assert asked == [(hub, None, s) for s in DYNAMATH_SPLITS] and skipped == {}
    assert [e["id"] for e in examples] == [f"{s}:7" for s in DYNAMATH_SPLITS]
    assert ([e["answer"] for e in examples] == [str(k) for k in range(10)]
            and os.path.exists(examples[0]["images"][0]))
    del table[(hub, None, "sample_variant7")]
    summary = ev.run_benchmarks(VisionEngine(lambda p, k: "\\boxed{0}"), ["dynamath", "embspatial"],
                                log=lambda *_: None)
    assert "split sample_variant7" in summary["errors"]["dynamath"] and "DynaMath/DynaMath_Sample" in \
        summary["errors"]["dynamath"]
    # each fails alone, naming what was asked
    assert "FlagEval/EmbSpatial-Bench" in summary["errors"]["embspatial"]
