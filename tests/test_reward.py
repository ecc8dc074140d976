"""The binary grader: extraction, equivalence, retries, letters, and hostile input."""
import time

import pytest

from reward import answers_match, grade, last_boxed, normalize, parse_verdict


def test_last_box_wins_and_braces_balance():
    assert last_boxed("a \\boxed{1} b \\boxed{2}") == "2"
    assert last_boxed("\\boxed{\\frac{1}{2}}") == "\\frac{1}{2}"
    assert last_boxed("\\boxed{{a}{b}} and \\boxed{x") == "{a}{b}"  # an unclosed last box falls back
    assert last_boxed("\\boxed {3}") == "3"
    assert last_boxed("no box") is None and last_boxed("\\boxed{}") == ""
    assert last_boxed("\\boxed{a\\}b}") == "a\\}b"


@pytest.mark.parametrize("pred,gold", [
    ("0.5", "1/2"), ("\\frac{1}{2}", "0.5"), ("\\dfrac{1}{2}", "1/2"), ("1,000", "1000"), ("72 clips", "72"),
    ("\\text{72}", "72"), ("\\$18", "18"), ("18.", "18"), ("\\left( 1, 2 \\right)", "(1,2)"),
    ("x^2+2x+1", "(x+1)^2"), ("\\sqrt{2}/2", "\\frac{\\sqrt{2}}{2}"), ("-3", "-3.0"),
    ("90^\\circ", "90"), ("90°", "90"), ("50\\%", "50"), ("50%", "0.5\\%") ,
])
def test_equivalences(pred, gold):
    if gold == "0.5\\%":  # percent retry compares 50 with 0.5: different numbers stay wrong
        assert not answers_match(pred, gold)
    else:
        assert answers_match(pred, gold), (pred, gold)


@pytest.mark.parametrize("pred,gold", [("3", "4"), ("\\pi", "3.14"), ("1/3", "0.33"), ("x+1", "x+2"), ("", "0")])
def test_non_equivalences(pred, gold):
    assert not answers_match(pred, gold)


def test_multiple_choice_letters():
    assert grade("so \\boxed{B}", "B") == 1.0
    assert grade("\\boxed{(c)}", "C") == 1.0
    assert grade("\\boxed{\\text{D}}", "(D)") == 1.0
    assert grade("\\boxed{A}", "B") == 0.0
    assert grade("\\boxed{B. 42}", "B") == 0.0


def test_grade_needs_a_box():
    assert grade("The answer is 7.", "7") == 0.0
    assert grade("<think>3+4=7</think> \\boxed{7}", "7") == 1.0
    assert grade("\\boxed{7} wait, \\boxed{8}", "7") == 0.0


def test_normalize():
    assert normalize(" \\text{ 5 } ") == "5"
    assert normalize("\\left[1,2\\right]") == "[1,2]"


@pytest.mark.parametrize("response", [
    "\\boxed{9^{9^{9^9}}}", "\\boxed{10^{10^{10}}}", "\\boxed{2^{10000000}}", "\\boxed{100000000!}",
    "\\boxed{" + "9" * 200_000 + "}", "x" * 1_000_000 + "\\boxed{1}", "\\boxed{" * 200_000,
    "{" * 500_000 + "\\boxed{" + "{" * 500_000, "\\boxed{" + "(" * 5000 + ")" * 5000 + "}",
    "\\boxed{\\frac{" + "1" * 150 + "}{3}}",
])
def test_hostile_inputs_finish_quickly(response):
    start = time.perf_counter()
    score = grade(response, "1")
    assert time.perf_counter() - start < 5.0
    assert score in (0.0, 1.0)
    assert score == (1.0 if response.endswith("\\boxed{1}") else 0.0)


@pytest.mark.parametrize("text,score", [
    ('{"verdict": "correct"}', 1.0),
    ('{"verdict":"wrong"}', 0.0),
    ('  {"verdict": "correct"}\n', 1.0),
    ('<think>they match</think>\n{"verdict": "correct"}', 1.0),
    ('The answer is correct. {"verdict": "correct"}', 0.0),  # extra prose
    ('{"verdict": "correct"} I am sure.', 0.0),
    ('```json\n{"verdict": "correct"}\n```', 0.0),
    ('{"verdict": "Correct"}', 0.0),
    ('{"result": "correct"}', 0.0),  # wrong key
    ('{"verdict": "correct", "why": "x"}', 0.0),  # extra key
    ('["correct"]', 0.0),
    ('{"verdict": "correct"', 0.0),  # malformed
    ("", 0.0),
])
def test_judge_verdict_must_be_strict_json(text, score):
    assert parse_verdict(text) == score
