"""The binary grader: extraction, equivalence, retries, letters, and hostile input."""
import time
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from reward import answers_match, as_number, grade, last_boxed, normalize, parse_verdict


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


@pytest.mark.parametrize("pred,gold", [("3", "4"), ("\\pi", "3.14"), ("1/3", "0.33"), ("x+1", "x+2"),
                                       ("", "0")])
def test_non_equivalences(pred, gold):
    assert not answers_match(pred, gold)


@pytest.mark.parametrize("pred,gold", [
    ("0.00001", "1e-05"), ("1e-5", "0.00001"), ("1E-5", "1e-05"), ("2500", "2.5E3"), ("2.5e3", "2500"),
    ("-300", "-3e+2"), ("-3e+2", "-300.0"), ("6.02e23", "602000000000000000000000"), ("+1e2", "100"),
    ("1.5e-3", "\\frac{3}{2000}"), ("1.5e-3", "3/2000"), ("2.5e3 m", "2500"), ("1e0", "1"), (".5e1", "5"),
    ("1,000e-3", "1"), ("1e-400", "1e-400"), ("1E+300", "1e300"),
])
def test_exponent_notation_is_the_number_it_is(pred, gold):
    """Was: "1e-05" (a JSON gold 0.00001 as str() wrote it) never equal to \\boxed{0.00001}, -3e+2 never -300:
    the grader's numbers had no exponent."""
    assert answers_match(pred, gold) and answers_match(gold, pred), (pred, gold)
    assert grade(f"so \\boxed{{{pred}}}", gold) == 1.0


@pytest.mark.parametrize("pred,gold", [("1e-5", "0.0001"), ("1e5", "1e6"), ("2e3", "2"), ("-1e2", "1e2"),
                                       ("1e-400", "0"), ("1e300", "1e301")])
def test_exponent_notation_of_different_numbers_is_not_equal(pred, gold):
    assert not answers_match(pred, gold) and not answers_match(gold, pred)


@pytest.mark.parametrize("huge", ["1e999999999", "-1e-999999999", "9.99e99999", "1E+1000000", "2e5000 m",
                                  "1e99999999999999999999999999999999999999999"])
def test_a_huge_exponent_never_builds_the_number(huge, monkeypatch):
    """\\boxed{1e999999999} would build a billion-digit integer (in C, where no time limit stops it): refused
    as a number and before math-verify, in no time, whichever side it is on."""
    import math_verify

    calls = []
    monkeypatch.setattr(math_verify, "parse", lambda *args, **kwargs: calls.append(args))
    start = time.perf_counter()
    assert as_number(huge) is None
    assert not answers_match(huge, "1") and not answers_match("1", huge) and not answers_match(huge, "0")
    assert grade(f"\\boxed{{{huge}}}", "100") == 0.0
    assert answers_match(huge, huge)  # the same text is the same answer
    assert time.perf_counter() - start < 0.1 and calls == []


def test_as_number_reads_exponents_exactly():
    assert as_number("1e-5") == Fraction(1, 100000) and as_number("2.5E3") == 2500
    assert as_number("-3e+2 kg") == -300 and as_number("e5") is None and as_number("1e5/2") is None


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


@pytest.mark.parametrize("text,verdict", [
    ('<think>they match</think>{"verdict": "correct"}', "correct"),
    # the chat template opened <think> in the prompt
    ('they match</think>\n{"verdict": "correct"}', "correct"),
    ('Let me check.\n<think>5 = 5</think>\n{"verdict": "correct"}', "correct"),  # the block after some text
    ('<think>a</think> b </think>\n{"verdict": "wrong"}', "wrong"),  # thinking ends at the last </think>
    ('they match</think>{"verdict": "wrong"}', "wrong"),
    ('<think>{"verdict": "correct"}</think>', None),  # the only JSON is inside the thinking
    ('<think>{"verdict": "correct"}</think> so I would say so', None),
    ('{"verdict": "correct"}</think>', None),  # inside a block whose opening tag was in the prompt
    ('{"verdict": "correct"}</think> it is wrong', None),
    ('<think>{"verdict": "correct"}', None),  # a block never closed (the judge ran out of tokens)
])
def test_judge_verdict_after_a_think_block_anywhere(text, verdict):
    from reward import verdict_of

    assert verdict_of(text) == verdict
    assert parse_verdict(text) == float(verdict == "correct")


# ---------------------------------------------------------------------------------------------------------
# Exact+Judge routing and the paper's judge prompt (docs/EVAL.md)

from reward import (
    JUDGE_MAX_RESPONSE_CHARS,
    clip_start,
    judge_prompt,
    rule_verdict,
    score_detailed,
    score_nested,
    score_responses,
    verdict_of,
)
from rollout import Rollout


class Judge:
    """A stub judge engine: replies from a function of the prompt, records every call."""

    def __init__(self, reply=lambda prompt: '{"verdict": "correct"}', fail=False):
        self.reply, self.fail, self.calls = reply, fail, []

    def generate(self, prompts, n=1, max_new_tokens=256, **sampling):
        self.calls.append({"prompts": list(prompts), "n": n, "max_new_tokens": max_new_tokens, **sampling})
        if self.fail:  # a remote judge whose requests all failed returns no rollout per prompt
            return [[] for _ in prompts]
        return [[Rollout(text=self.reply(p), prompt_ids=[], token_ids=[])] for p in prompts]


PAPER_LINES = [  # docs/EVAL.md, "The shared judge prompt", lines that must reach the judge exactly
    "You are an expert judge evaluating whether a model's response is correct according to the ground truth.",
    "## Your Role (READ FIRST)",
    "• Do NOT second-guess the ground truth, even if it seems wrong.",
    ("• If the final answer is missing due to answer format error, truncation, or other reasons, look inside "
     "thinking or reasoning."),
    ('Output ONLY a valid JSON object with exactly this format (no prose, no code fences, no trailing '
     'commentary): {"verdict": "correct" or "wrong"}'),
]


def test_judge_prompt_is_the_papers_template_with_options_only_when_present():
    plain = judge_prompt({"question": "What is 2+2?", "answer": "4"}, "<think>2+2</think> so four")
    lines = plain.split("\n")
    assert all(line in lines for line in PAPER_LINES)
    assert lines[-7:-1] == ["## Question", "What is 2+2?", "## Model Response", "<think>2+2</think> so four",
                            "## Ground Truth Answer", "4"]
    assert "## Answer Options" not in plain and "{{" not in plain and "{%" not in plain
    mc = judge_prompt({"question": "Pick.\n\nA. one\nB. two", "stem": "Pick.", "options": "A. one\nB. two",
                       "answer": "B"}, "it is \\boxed{two}")
    assert ("## Question\nPick.\n## Answer Options\nA. one\nB. two\n## Model Response\nit is \\boxed{two}\n"
            in mc)


def test_long_responses_lose_their_start_and_the_cut_is_marked():
    response = "reasoning " * 10_000 + "\\boxed{42}"
    clipped = clip_start(response)
    assert clipped.endswith("\\boxed{42}") and len(clipped) < JUDGE_MAX_RESPONSE_CHARS + 100
    cut = len(response) - JUDGE_MAX_RESPONSE_CHARS
    assert clipped.startswith(f"[... the first {cut} characters of the response are cut here ...]\n")
    assert clip_start("short") == "short"
    assert "\\boxed{42}" in judge_prompt({"question": "Q", "answer": "42"}, response)


@pytest.mark.parametrize("response,gold,truncated,expected", [
    ("so \\boxed{7}", "7", False, 1.0),
    ("so \\boxed{8}", "7", False, 0.0),
    ("the answer is 7", "7", False, None),  # no box: the judge decides
    ("\\boxed{}", "7", False, None),  # an empty box is no answer
    ("\\boxed{B. 42}", "B", False, None),  # a box without a readable letter
    ("\\boxed{C}", "B", False, 0.0),
    ("first \\boxed{3} then the tokens ran o", "7", True, None),  # an intermediate box of a cut response
    ("first \\boxed{7} then the tokens ran o", "7", True, 1.0),  # a matching box is trusted
])
def test_rule_verdict_resolves_what_it_can(response, gold, truncated, expected):
    assert rule_verdict(response, gold, truncated) == expected


def test_unresolved_rows_go_to_the_judge_with_the_full_response():
    examples = [{"question": "Q1", "answer": "7"}, {"question": "Q2", "answer": "7"},
                {"question": "Q3", "answer": "it is strictly increasing"}]
    responses = ["\\boxed{7}", "long reasoning ... and so the answer is seven", "\\boxed{it increases}"]
    judge = Judge()
    details = score_detailed(list(zip(examples, responses)), judge)
    assert ([d["via"] for d in details] == ["rule", "judge", "judge"]
            and [d["score"] for d in details] == [1, 1, 1])
    # one batch: the unboxed response and the free-form gold, nothing the rule decided
    (call,) = judge.calls
    assert len(call["prompts"]) == 2 and \
        "## Model Response\nlong reasoning ... and so the answer is seven\n" in call["prompts"][0]
    assert "## Ground Truth Answer\nit is strictly increasing" in call["prompts"][1]
    assert (call["temperature"], call["top_p"], call["max_new_tokens"]) == (0.0, 1.0, 512)

    alone = score_detailed(list(zip(examples, responses)), judge=None)  # no judge: unresolved, scored 0
    assert [(d["via"], d["score"]) for d in alone] == [("rule", 1.0), ("unresolved", 0.0),
                                                       ("unresolved", 0.0)]
    failed = score_detailed(list(zip(examples, responses)), Judge(fail=True))
    assert [d["score"] for d in failed] == [1.0, 0.0, 0.0] and failed[1]["judge_reply"] is None
    wrong = score_responses(list(zip(examples, responses)), Judge(reply=lambda p: "correct, I think"))
    assert wrong == [1.0, 0.0, 0.0]  # a malformed verdict is wrong


def test_training_rewards_route_the_same_way():
    """score_nested (train.py's reward) sends an unboxed rollout to the judge when there is one (a teacher);
    with --teacher gold there is none and it scores 0 as before; truncation follows the nesting of texts."""
    examples = [{"question": "Q", "answer": "5"}]
    texts = [["\\boxed{5}", "five", "\\boxed{4} and then"]]
    judge = Judge(reply=lambda p: '{"verdict": "correct"}' if "five" in p else '{"verdict": "wrong"}')
    assert score_nested(texts, examples, judge) == [[1.0, 1.0, 0.0]]
    assert len(judge.calls[0]["prompts"]) == 1  # only "five"
    assert score_nested(texts, examples, None) == [[1.0, 0.0, 0.0]]
    assert score_nested(texts, examples, judge, truncated=[[False, False, True]]) == [[1.0, 1.0, 0.0]]
    assert len(judge.calls[-1]["prompts"]) == 2  # the cut response with a wrong box was judged too


def test_a_truncated_response_is_scored_the_same_in_training_and_eval():
    """One routing for training rewards and benchmarks (App. D.1): a response the token limit cut whose last
    box is wrong (an intermediate box, the final answer never written) goes to the judge in eval.py and in
    every training reward (the student's rollouts, ZPPO's teacher rollouts, Off-Distill's targets); the same
    text finished is the rule's 0 everywhere."""
    from types import SimpleNamespace

    import eval as ev
    import train
    from baselines import off_distill_targets
    from reward import score_rollouts
    from zppo import Group

    def rollouts():
        text = "first \\boxed{4}, then"
        return [Rollout(text, [1], [2, 3], finish_reason="length"),
                Rollout(text, [1], [2, 3], finish_reason="stop")]

    class Teacher:  # answers its plain prompt with the two rollouts, and judges every response correct
        def generate(self, prompts, n=1, **sampling):
            return [[Rollout('{"verdict": "correct"}', [], [])] if p.startswith("You are an expert judge")
                    else rollouts()[:n] for p in prompts]

    examples = [{"id": "q", "question": "Q", "answer": "5"}]
    scored = ev.score_groups([rollouts()], examples, Judge())
    assert [v["score"] for v in scored[0]] == [1.0, 0.0] and scored[0][0]["via"] == "judge"
    assert score_rollouts([rollouts()], examples, Judge()) == [[1.0, 0.0]]
    cfg = SimpleNamespace(teacher="T", teacher_group_size=2, teacher_max_new_tokens=4, temperature=1.0,
                          top_p=1.0, top_k=0)
    kept = train.teacher_correct(cfg, Teacher(), examples)
    assert [[r.finish_reason for r in g] for g in kept] == [["length"]]
    targets, counts = off_distill_targets([Group(examples[0], "plain", "Q", rollouts=rollouts())], Teacher(),
                                          n=2, max_new_tokens=4)
    assert len(targets) == 1 and counts["acc/teacher"] == 0.5


def test_verdict_of_names_the_verdict_or_none():
    assert verdict_of('{"verdict": "wrong"}') == "wrong" and verdict_of('{"verdict": "correct"}') == "correct"
    assert verdict_of("wrong") is None and verdict_of('{"verdict": "WRONG"}') is None


# ---------------------------------------------------------------------------------------------------------
# property: any string, random or built to explode, is graded 0 or 1 in under 2 s, without raising

LATEX_BITS = ["9", "99", "999", "1", "0", "x", "n", "^", "!", "{", "}", "(", ")", "[", "]", "\\frac",
              "\\sqrt", "\\binom", "\\cdot", "\\times", "\\pi", "e", "+", "-", "*", "/", ",", ".", " ",
              "\\boxed{", "\\left(", "\\right)", "%", "^\\circ", "\\infty", "=", "<", "\\{", "\\}", "_",
              "\\int", "\\sum", "|", "\\"]
atoms = st.sampled_from(["9", "99", "999", "x", "n", "2", "10", "\\pi", "e"])
# nested powers, factorials, products and binomials in every bracket style: towers like {9}^{{9}^{9}}, (99!)!
explosive = st.recursive(atoms, lambda inner: st.one_of(
    st.tuples(inner, inner).map(lambda ab: f"{{{ab[0]}}}^{{{ab[1]}}}"),
    st.tuples(inner, inner).map(lambda ab: f"{ab[0]}^{ab[1]}"),
    inner.map(lambda a: f"({a})!"), inner.map(lambda a: f"{{{a}}}!"), inner.map(lambda a: a + "!"),
    st.tuples(inner, inner).map(lambda ab: f"({ab[0]}*{ab[1]})"),
    st.tuples(inner, inner).map(lambda ab: f"\\binom{{{ab[0]}}}{{{ab[1]}}}"),
    st.tuples(inner, inner).map(lambda ab: f"\\frac{{{ab[0]}}}{{{ab[1]}}}")), max_leaves=6)
answers = st.one_of(explosive, st.lists(st.sampled_from(LATEX_BITS), max_size=40).map("".join),
                    st.text(max_size=60))
responses = st.one_of(answers.map(lambda a: f"The answer is \\boxed{{{a}}}"), st.text(max_size=300),
                      st.tuples(st.text(max_size=40), answers, answers).map(
                          lambda t: f"{t[0]}\\boxed{{{t[1]}}} \\boxed{{{t[2]}"))
golds = st.one_of(st.sampled_from(["1", "1", "1", "720", "x", "\\frac{1}{2}", "(B)", "\\pi", "90^\\circ",
                                   "50\\%", "9^{9}"]),
                  answers)


@settings(max_examples=80, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(response=responses, gold=golds)
@example(response="\\boxed{{9}^{{9}^{9}}}", gold="1")  # the known worst cases always run
@example(response="so \\boxed{(99!)!}", gold="1")
@example(response="\\boxed{\\binom{1000000}{500000}}", gold="1")
def test_grade_is_bounded_on_random_and_adversarial_strings(response, gold):
    grade("\\boxed{x+1}", "x+2")  # math-verify's one-time import and warm-up are not a response's cost
    start = time.perf_counter()
    score = grade(response, gold)
    assert time.perf_counter() - start < 2.0, (response, gold)
    assert score in (0.0, 1.0)


@pytest.mark.parametrize("tower", ["{9}^{{9}^{9}}", "(99!)!", "9^{{9}^{9}}", "((99)!)!", "(9^9)!",
                                   "(999*999)!", "\\binom{1000000}{500000}", "2^{9!}", "9!!!!!!!",
                                   "(10^{10})!"])
def test_towers_and_nested_factorials_are_refused_before_math_verify(tower, monkeypatch):
    """These took 2.0-2.6 s each, stopped only by math-verify's time limit: now refused without trying it."""
    import math_verify

    calls = []
    monkeypatch.setattr(math_verify, "parse", lambda *args, **kwargs: calls.append(args))
    start = time.perf_counter()
    assert grade(f"\\boxed{{{tower}}}", "1") == 0.0
    assert time.perf_counter() - start < 0.1 and calls == []


def test_small_factorials_and_powers_still_reach_math_verify():
    assert answers_match("(3!)!", "720") and answers_match("2^{3!}", "64") and answers_match("5!", "120")
    assert answers_match("{2}^{10}", "1024") and answers_match("\\binom{5}{2}", "10")
    assert not answers_match("(3!)!", "721")


def test_a_slow_math_verify_is_cut_off_by_the_answers_budget(monkeypatch):
    """Whatever the pre-check misses, no math-verify call starts once SYMBOLIC_BUDGET_S of the answer is
    spent."""
    import math_verify

    import reward

    answers_match("x+1", "x+2")  # math-verify's one-time warm-up, outside the measured time
    real_parse, calls = math_verify.parse, []

    def slow_parse(*args, **kwargs):
        calls.append(args[0])
        time.sleep(0.3)
        return real_parse(*args, **kwargs)

    monkeypatch.setattr(math_verify, "parse", slow_parse)
    assert reward.SYMBOLIC_BUDGET_S < 0.6
    start = time.perf_counter()
    assert not answers_match("x^2+2x+1", "(x+1)^2")  # equal, but there is no time left to verify it
    assert calls == ["\\boxed{(x+1)^2}", "\\boxed{x^2+2x+1}"]  # both parses ran, then the budget was spent
    assert time.perf_counter() - start < 1.0
    monkeypatch.setattr(reward, "SYMBOLIC_BUDGET_S", 5.0)
    assert answers_match("x^2+2x+1", "(x+1)^2")


@pytest.mark.parametrize("reply", [7, ["correct"], None, {"verdict": "correct"}, "[" * 100_000,
                                   '{"verdict": ' * 50_000, "<think>" + "x" * 1_000_000])
def test_the_verdict_parsers_never_raise(reply):
    """Was: RecursionError on deeply nested JSON, TypeError on a reply that is no text: the run died."""
    import eval as ev
    from reward import verdict_of

    start = time.perf_counter()
    assert verdict_of(reply) is None and parse_verdict(reply) == 0.0
    if isinstance(reply, str):
        assert ev.parse_hle(reply, {}) is None and ev.yes_no_verdict(reply) is None
    assert time.perf_counter() - start < 0.5
