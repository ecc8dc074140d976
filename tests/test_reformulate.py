"""Prompt strings exactly as the spec prints them, and the selection logic of spec steps 4-6."""
import random

from baselines import hint_prompt
from reformulate import (
    CLOSER,
    bcq_prompt,
    compression_prompt,
    dedup,
    extract_summary,
    ncq_prompt,
    pick_bcq_pair,
    postcap,
    precap,
    with_closer,
)


def test_closer_is_appended_after_one_space():
    assert CLOSER == ("You FIRST think about the reasoning process as an internal monologue and then provide "
                      "the final answer. The reasoning process MUST BE enclosed within <think> </think> "
                      "tags. The final answer MUST BE put in \\boxed{}.")
    assert with_closer("Q?") == "Q? " + CLOSER


def test_bcq_prompt_exact():
    expected = (
        "What is 2+2?\n\n"
        "Here are two candidate responses in <candidate> </candidate> tags to the question above. One is "
        "correct and another is wrong. Use these as references to help you solve the problem.\n"
        "<candidate>\nA \\boxed{4}\n</candidate>\n"
        "<candidate>\nB \\boxed{5}\n</candidate>"
    )
    assert bcq_prompt("What is 2+2?", ["A \\boxed{4}", "B \\boxed{5}"]) == expected


def test_ncq_prompt_exact():
    expected = (
        "Q\n\n"
        "The following answers are all WRONG: \\boxed{5}, \\boxed{6}. Below are the incorrect reasoning "
        "processes in <candidate> </candidate> tags.\n"
        "<candidate>\nw1\n</candidate>\n<candidate>\nw2\n</candidate>\n<candidate>\nw3\n</candidate>"
    )
    assert ncq_prompt("Q", ["5", "6"], ["w1", "w2", "w3"]) == expected
    # no parseable wrong answer: the WRONG sentence is left out, the candidates stay
    assert ncq_prompt("Q", [], ["w1"]) == (
        "Q\n\nBelow are the incorrect reasoning processes in <candidate> </candidate> tags.\n"
        "<candidate>\nw1\n</candidate>")


def test_compression_and_hint_prompts_exact():
    assert compression_prompt("RESP") == (
        "Compress the response below into a summary (in 5 lines max). Rules:\n"
        "• Response is in <response>...</response> tags\n"
        "• Summary should be in <summary>...</summary> tags and should be in 5 lines max\n"
        "• Keep ONLY the essential reasoning steps and the final answer\n"
        "• Remove ALL exploratory text, self-corrections, retries, and filler\n"
        "• Do NOT re-derive or add new information\n"
        "• End with the final answer in \\boxed{} format\n"
        "<response>\nRESP\n</response>")
    assert hint_prompt("R") == (
        "Read the solved response below and write a concise hint that helps solve the original question. "
        "Do NOT reveal the final answer, do NOT include any \\boxed{} expression, and do NOT copy the full "
        "solution. Keep only high-level guidance or the key intermediate idea. <response>\nR </response>")


def test_extract_summary_and_fallback():
    assert extract_summary("junk <summary>\n a \\boxed{1}\n</summary> tail") == "a \\boxed{1}"
    assert extract_summary("<summary>x</summary><summary>y</summary>") == "y"
    assert extract_summary("  no tags here \\boxed{2} ") == "no tags here \\boxed{2}"
    assert extract_summary("<summary>unterminated") == "<summary>unterminated"


def test_dedup_keeps_first_seen_order_and_drops_missing():
    assert dedup(["5", None, " 6", "5", "6 ", ""]) == ["5", "6"]


def test_precap_hardest_first_with_random_ties():
    acc = [0.375, 0.0, 0.125, 0.0, 0.25, 0.0, 0.9]
    hard = [0, 1, 2, 3, 4, 5]
    seen = set()
    for seed in range(30):
        kept = precap(acc, hard, 4, random.Random(seed))
        assert sorted(kept[:3]) == [1, 3, 5] and kept[3] == 2
        seen.add(tuple(kept[:3]))
    assert len(seen) > 1  # ties are broken randomly
    assert precap(acc, hard, 10, random.Random(0))[-1] == 0  # no cap hit: all kept, easiest last


def test_postcap_bcq_before_ncq_and_bcq_needs_a_teacher_answer():
    kept = [7, 3, 5]
    ok = {7: True, 3: False, 5: True}
    assert postcap(kept, ok, 10) == [(7, "bcq"), (7, "ncq"), (3, "ncq"), (5, "bcq"), (5, "ncq")]
    assert postcap(kept, ok, 3) == [(7, "bcq"), (7, "ncq"), (3, "ncq")]
    assert postcap(kept, ok, 4) == [(7, "bcq"), (7, "ncq"), (3, "ncq"), (5, "bcq")]  # one slot: BCQ, no NCQ
    assert postcap(kept, ok, 10, bcq=False) == [(7, "ncq"), (3, "ncq"), (5, "ncq")]
    assert postcap(kept, ok, 10, ncq=False) == [(7, "bcq"), (5, "bcq")]
    assert postcap(kept, ok, 0) == []


def test_bcq_pair_has_one_of_each_in_both_orders():
    orders = set()
    for seed in range(40):
        pair = pick_bcq_pair(["T1", "T2"], ["W1", "W2", "W3"], random.Random(seed))
        assert len(pair) == 2 and sum(p.startswith("T") for p in pair) == 1
        orders.add(pair[0][0])
    assert orders == {"T", "W"}
