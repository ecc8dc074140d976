"""eval.py: the paper's protocol, routing, the judge's strict JSON, benchmark loading, and a grader audit."""
import json
import os
import subprocess
import sys

import pytest

import eval as ev
from conftest import ROOT
from data import load_jsonl
from reformulate import CLOSER
from reward import grade, route_of
from rollout import Rollout


class ScriptedEngine:
    """Stands in for a generation engine: answers each prompt from a function, records what it was asked."""

    def __init__(self, answer):
        self.answer, self.calls = answer, []

    def generate(self, prompts, n=1, max_new_tokens=256, **sampling):
        self.calls.append({"prompts": list(prompts), "n": n, "max_new_tokens": max_new_tokens, **sampling})
        return [[Rollout(text=self.answer(p, k), prompt_ids=[], token_ids=[]) for k in range(n)] for p in prompts]


@pytest.mark.parametrize("question,expected", [
    ("What is 2+2? Please reason step by step, and put your final answer within \\boxed{}.", "What is 2+2?"),
    ("Let's think step by step. Find x if 2x = 4.", "Find x if 2x = 4."),
    ("Which is larger?\nAnswer with only the letter of the correct option.\nA. 1\nB. 2", "Which is larger?\nA. 1\nB. 2"),
    ("Solve it. The last line of your response should be of the following format: 'Answer: $LETTER'\nA. x",
     "Solve it.\nA. x"),
    ("Think step-by-step and put your final answer in \\boxed{}. What is 3?", "What is 3?"),
    ("A plain question about thinking steps?", "A plain question about thinking steps?"),
])
def test_strip_directives(question, expected):
    assert ev.strip_directives(question) == expected


def test_prompts_carry_only_the_closer_and_the_paper_sampling():
    engine = ScriptedEngine(lambda p, k: "\\boxed{4}")
    examples = [{"id": "a", "question": "What is 2+2?", "answer": "4"}]
    ev.evaluate(engine, examples, samples=3, max_new_tokens=99)
    call = engine.calls[0]
    assert call["prompts"] == ["What is 2+2? " + CLOSER]
    assert (call["n"], call["max_new_tokens"]) == (3, 99)
    assert {k: call[k] for k in ev.SAMPLING} == {"temperature": 0.6, "top_p": 0.95, "top_k": 20, "min_p": 0.0,
                                                 "presence_penalty": 1.5}


def test_avg_at_k_and_standard_error():
    # question a: 3 of 4 samples right, question b: 1 of 4, question c: 0 of 4
    right = {"qa": 3, "qb": 1, "qc": 0}
    engine = ScriptedEngine(lambda p, k: f"\\boxed{{{'1' if k < right[p.split()[0]] else '0'}}}")
    examples = [{"id": q, "question": q, "answer": "1"} for q in ("qa", "qb", "qc")]
    res = ev.evaluate(engine, examples, samples=4)
    per_q = [0.75, 0.25, 0.0]
    mean = sum(per_q) / 3
    se = (sum((x - mean) ** 2 for x in per_q) / 2 / 3) ** 0.5
    assert res["accuracy"] == pytest.approx(mean) and res["stderr"] == pytest.approx(se)
    assert len(res["records"]) == 12 and sum(r["correct"] for r in res["records"]) == 4


def test_multiple_choice_rows_become_lettered_questions():
    mmlu = ev.to_example({"question": "Pick two.", "choices": ["one", "two"], "answer": 1}, ev.BENCHMARKS["mmlu"], "x")
    assert mmlu["question"] == "Pick two.\n\nA. one\nB. two" and mmlu["answer"] == "B"
    pro = ev.to_example({"question": "Q", "options": ["a", "b", "c"], "answer": "C"}, ev.BENCHMARKS["mmlu_pro"], "x")
    assert pro["answer"] == "C" and pro["question"].endswith("C. c")
    row = {"Question": "Which?", "Correct Answer": "right", "Incorrect Answer 1": "w1", "Incorrect Answer 2": "w2",
           "Incorrect Answer 3": "w3"}
    gpqa = ev.to_example(row, ev.BENCHMARKS["gpqa_diamond"], "x")
    letter = gpqa["answer"]
    assert f"{letter}. right" in gpqa["question"]
    assert ev.to_example(row, ev.BENCHMARKS["gpqa_diamond"], "x") == gpqa  # same order every run
    assert grade(f"so \\boxed{{{letter}}}", letter) == 1.0
    ceval = ev.to_example({"question": "Q", "A": "1", "B": "2", "C": "3", "D": "4", "answer": "D"},
                          ev.BENCHMARKS["ceval"], "x")
    assert ceval["answer"] == "D" and ceval["question"].endswith("D. 4")
    with pytest.raises(ValueError, match="missing field"):
        ev.to_example({"question": "Q"}, ev.BENCHMARKS["mmlu"], "f.jsonl:3")


def test_routing_rule_choice_and_judge():
    assert route_of({"answer": "42", "route": "rule"}) == "rule"
    assert route_of({"answer": "\\frac{\\sqrt{3}}{2}", "route": "rule"}) == "rule"
    assert route_of({"answer": "B", "route": "choice"}) == "choice"
    assert route_of({"answer": "the function is strictly increasing", "route": "rule"}) == "judge"
    assert route_of({"answer": "7", "route": "judge"}) == "judge"

    examples = [{"id": "n", "question": "num", "answer": "7", "route": "rule"},
                {"id": "f", "question": "prose", "answer": "it is strictly increasing", "route": "rule"}]
    student = ScriptedEngine(lambda p, k: "\\boxed{7}" if p.startswith("num") else "\\boxed{it increases}")
    judge = ScriptedEngine(lambda p, k: '{"verdict": "correct"}')
    res = ev.evaluate(student, examples, judge=judge)
    assert [r["route"] for r in res["records"]] == ["rule", "judge"]
    assert res["accuracy"] == 1.0
    (call,) = judge.calls  # only the free-form answer went to the judge, greedy with 512 new tokens
    assert len(call["prompts"]) == 1 and "it is strictly increasing" in call["prompts"][0]
    assert "it increases" in call["prompts"][0] and call["temperature"] == 0.0 and call["max_new_tokens"] == 512
    assert ev.evaluate(student, examples, judge=None)["accuracy"] == 0.5  # no judge: free-form scores 0


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_missing_benchmark_fails_clearly_while_the_rest_complete(tmp_path):
    write_jsonl(tmp_path / "gsm8k.jsonl", [{"question": "1+1?", "answer": "x\n#### 2"}, {"question": "2+2?", "answer": "y\n#### 4"}])
    write_jsonl(tmp_path / "mmlu.jsonl", [{"question": "Pick A.", "choices": ["a", "b"], "answer": 0}])
    write_jsonl(tmp_path / "math500.jsonl", [{"problem": "3?", "answer": "3"}])
    engine = ScriptedEngine(lambda p, k: "\\boxed{2}" if "1+1" in p else "\\boxed{A}" if "Pick" in p else "\\boxed{0}")
    summary = ev.run_benchmarks(engine, ["gsm8k", "no_such_set", "mmlu", "math500"], data_dir=str(tmp_path),
                                log=lambda *_: None)
    assert set(summary["benchmarks"]) == {"gsm8k", "mmlu", "math500"}
    assert "unknown benchmark 'no_such_set'" in summary["errors"]["no_such_set"]
    assert summary["benchmarks"]["gsm8k"]["accuracy"] == 0.5 and summary["benchmarks"]["mmlu"]["accuracy"] == 1.0
    assert summary["macro"] == {"math": pytest.approx(0.25), "knowledge": 1.0}
    table = ev.markdown_table(summary)
    assert "| **math (macro)** | math | 25.0 |" in table and "| no_such_set | failed |" in table


def test_unreachable_benchmark_names_what_was_tried(tmp_path):
    with pytest.raises(RuntimeError, match=r"benchmark 'aime2025' could not be loaded; tried: .*aime2025.jsonl \(not found\); hub MathArena/aime_2025"):
        ev.load_benchmark("aime2025", data_dir=str(tmp_path))


def test_eval_cli_end_to_end_on_a_tiny_model(tiny_model, tmp_path):
    write_jsonl(tmp_path / "math500.jsonl", [{"problem": f"What is {i} + 1? Think step by step.", "answer": str(i + 1)}
                                             for i in range(4)])
    res = subprocess.run([sys.executable, "eval.py", "--model", tiny_model, "--benchmarks", "math500,gsm8k",
                          "--data-dir", str(tmp_path), "--max-new-tokens", "6", "--samples", "2",
                          "--out", str(tmp_path / "res.json"), "--responses", str(tmp_path / "resp.jsonl")],
                         cwd=ROOT, check=True, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert "| math500 | math |" in res.stdout and "| gsm8k | failed |" in res.stdout
    with open(tmp_path / "res.json") as f:
        summary = json.load(f)
    assert summary["benchmarks"]["math500"]["questions"] == 4 and "gsm8k" in summary["errors"]
    with open(tmp_path / "resp.jsonl") as f:
        records = [json.loads(line) for line in f]
    assert len(records) == 8 and all(r["benchmark"] == "math500" and "extracted" in r for r in records)


def test_grader_audit_on_gsm8k_gold_solutions(capsys):
    """GSM8K test solutions, rewritten to end in \\boxed{}, graded as if they were responses: ~100% against
    their own answer, ~0% against another question's answer."""
    examples = load_jsonl(os.path.join(ROOT, "tests", "data", "gsm8k_test.jsonl"))
    assert len(examples) == 1319
    own = sum(grade(ex["solution"], ex["answer"]) for ex in examples) / len(examples)
    pairs = list(zip(examples, examples[1:] + examples[:1]))  # each solution against the next question's answer
    shifted = sum(grade(ex["solution"], other["answer"]) for ex, other in pairs) / len(pairs)
    differing = [(ex, other) for ex, other in pairs if float(ex["answer"]) != float(other["answer"])]
    false_positives = int(sum(grade(ex["solution"], other["answer"]) for ex, other in differing))
    with capsys.disabled():
        print(f"\n[grader audit] GSM8K test ({len(examples)}): own answer {100 * own:.2f}% correct; another "
              f"question's answer {100 * shifted:.2f}% correct ({len(pairs) - len(differing)} pairs share the same "
              f"answer; {false_positives} of {len(differing)} pairs with different answers graded correct)")
    assert own >= 0.999
    assert false_positives == 0 and shifted <= 0.02


def test_local_benchmark_file_errors_name_file_and_line(tmp_path):
    (tmp_path / "math500.jsonl").write_text('{"problem": "1?", "answer": "1"}\n\n{"problem": "2?"}\n')
    with pytest.raises(ValueError, match=r"math500.jsonl:3: missing field"):
        ev.load_benchmark("math500", data_dir=str(tmp_path))
    (tmp_path / "math500.jsonl").write_text('{"problem": "1?", "answer": "1"}\n{oops\n')
    with pytest.raises(ValueError, match=r"math500.jsonl:2: not valid JSON"):
        ev.load_benchmark("math500", data_dir=str(tmp_path))
    assert len(ev.load_benchmark("math500", data_dir=str(tmp_path), limit=1)) == 1
