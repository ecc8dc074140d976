"""eval.py and benchmarks/ (load.py, score.py, llm.py): the paper's protocol, Exact+Judge routing, the
benchmarks' own judges (MultiChallenge, HLE), loading every hub format (multi-config sets through a stand-in
`datasets.load_dataset`), failure-safety, and a grader audit."""
import json
import os
import subprocess
import sys

import pytest

import eval as ev
from benchmarks import BENCHMARKS, llm, load, report, score
from conftest import ROOT
from data import load_jsonl
from reformulate import CLOSER
from reward import grade
from rollout import Rollout


class ScriptedEngine:
    """Stands in for a generation engine: answers each prompt from a function, records what it was asked.
    The function returns the text, or (text, finish_reason) for a response cut by the token limit."""

    def __init__(self, answer):
        self.answer, self.calls = answer, []

    def generate(self, prompts, n=1, max_new_tokens=256, **sampling):
        self.calls.append({"prompts": list(prompts), "n": n, "max_new_tokens": max_new_tokens, **sampling})
        return [[self._rollout(self.answer(p, k)) for k in range(n)] for p in prompts]

    @staticmethod
    def _rollout(out):
        text, finish = out if isinstance(out, tuple) else (out, "stop")
        return Rollout(text=text, prompt_ids=[], token_ids=[], finish_reason=finish)


PAPER_JUDGE_START = ("You are an expert judge evaluating whether a model's response is correct according "
                     "to the ground truth.")


@pytest.mark.parametrize("question,expected", [
    ("What is 2+2? Please reason step by step, and put your final answer within \\boxed{}.", "What is 2+2?"),
    ("Let's think step by step. Find x if 2x = 4.", "Find x if 2x = 4."),
    ("Which is larger?\nAnswer with only the letter of the correct option.\nA. 1\nB. 2",
     "Which is larger?\nA. 1\nB. 2"),
    ("Solve it. The last line of your response should be of the following format: 'Answer: $LETTER'\nA. x",
     "Solve it.\nA. x"),
    ("Think step-by-step and put your final answer in \\boxed{}. What is 3?", "What is 3?"),
    ("A plain question about thinking steps?", "A plain question about thinking steps?"),
])
def test_strip_directives(question, expected):
    assert load.strip_directives(question) == expected


def test_prompts_carry_only_the_closer_and_the_paper_sampling():
    engine = ScriptedEngine(lambda p, k: "\\boxed{4}")
    examples = [{"id": "a", "question": "What is 2+2?", "answer": "4"}]
    ev.evaluate(engine, examples, samples=3, max_new_tokens=99)
    call = engine.calls[0]
    assert call["prompts"] == ["What is 2+2? " + CLOSER]
    assert (call["n"], call["max_new_tokens"]) == (3, 99)
    assert {k: call[k] for k in ev.SAMPLING} == {"temperature": 0.6, "top_p": 0.95, "top_k": 20,
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
    mmlu, _ = load.to_example({"question": "Pick two.", "choices": ["one", "two"], "answer": 1},
                            BENCHMARKS["mmlu"], "x")
    assert mmlu["question"] == "Pick two.\n\nA. one\nB. two" and mmlu["answer"] == "B"
    assert mmlu["stem"] == "Pick two." and mmlu["options"] == "A. one\nB. two"  # the judge gets them apart
    pro, _ = load.to_example({"question": "Q", "options": ["a", "b", "c"], "answer": "C"},
                           BENCHMARKS["mmlu_pro"], "x")
    assert pro["answer"] == "C" and pro["question"].endswith("C. c")
    row = {"Question": "Which?", "Correct Answer": "right", "Incorrect Answer 1": "w1",
           "Incorrect Answer 2": "w2", "Incorrect Answer 3": "w3"}
    gpqa, _ = load.to_example(row, BENCHMARKS["gpqa_diamond"], "x")
    letter = gpqa["answer"]
    assert f"{letter}. right" in gpqa["question"]
    assert load.to_example(row, BENCHMARKS["gpqa_diamond"], "x")[0] == gpqa  # same order every run
    assert grade(f"so \\boxed{{{letter}}}", letter) == 1.0
    # an option whose text is a digit is still text, not an index
    digit = dict(row, **{"Correct Answer": "3"})
    d, _ = load.to_example(digit, BENCHMARKS["gpqa_diamond"], "x")
    assert f"{d['answer']}. 3" in d["question"]
    # a letter past the options: an unknown answer format, skipped and counted
    assert load.to_example({"question": "Q", "options": ["a", "b"], "answer": "Z"}, BENCHMARKS["mmlu_pro"],
                         "x") == (None, "answer_format")
    with pytest.raises(ValueError, match="f.jsonl:3: missing field"):
        load.to_example({"question": "Q"}, BENCHMARKS["mmlu"], "f.jsonl:3")


def test_every_benchmark_records_the_papers_protocol():
    paper = {"aime2025", "aime2026", "ceval", "gpqa_diamond", "hle", "imo_answerbench", "mmlu", "mmlu_pro",
             "mmlu_redux", "multichallenge"}  # Table 6
    assert {n for n, s in BENCHMARKS.items() if s["family"] == "llm"} == paper
    assert {n: s["protocol"] for n, s in BENCHMARKS.items() if s["protocol"] != "Exact+Judge"} == {
        "hle": "BenchJudge", "multichallenge": "BenchJudge", "mathvista": "Rule+Judge",
        "charxiv": "BenchJudge", "charxiv_descriptive": "BenchJudge", "mmvet": "BenchJudge",
        "infovqa": "Det.", "ocrbench_v2_en": "Det.", "ocrbench_v2_cn": "Det.", "mmvu": "BenchJudge",
        "mvbench": "Rule+Judge", "videomme": "Rule+Judge", "videomme_sub": "Rule+Judge",
        "videommmu": "Rule+Judge"}
    assert {n for n, s in BENCHMARKS.items() if s["family"] == "vlm"} == {  # Table 5's 16
        "ai2d", "babyvision", "charxiv", "dynamath", "embspatial", "infovqa", "mathverse", "mathvision",
        "mathvista", "mmmu_pro", "mmvet", "ocrbench_v2_en", "ocrbench_v2_cn", "visualpuzzles", "vlmsareblind",
        "wemath"}
    assert {n for n, s in BENCHMARKS.items() if s["family"] == "video"} == {  # Table 7's 5
        "mmvu", "mvbench", "videomme", "videomme_sub", "videommmu"}
    assert len(BENCHMARKS["mvbench"]["configs"]) == 20
    assert len(set(llm.MMLU_REDUX_SUBJECTS)) == 57 and len(set(llm.CEVAL_SUBJECTS)) == 52
    assert BENCHMARKS["aime2025"]["hub"] == "opencompass/AIME2025"
    assert BENCHMARKS["imo_answerbench"]["hub"] == "OpenEvals/IMO-AnswerBench"


# ---------------------------------------------------------------------------------------------------------
# Exact+Judge


def test_routing_rule_choice_and_judge():
    examples = [{"id": "n", "question": "num", "answer": "7", "route": "rule"},
                {"id": "f", "question": "prose", "answer": "it is strictly increasing", "route": "rule"},
                {"id": "u", "question": "unboxed", "answer": "9", "route": "rule"}]
    student = ScriptedEngine(lambda p, k: {"n": "\\boxed{7}", "p": "\\boxed{it increases}",
                                           "u": "<think>4+5</think> The answer is nine."}[p[0]])
    judge = ScriptedEngine(lambda p, k: '{"verdict": "correct"}')
    res = ev.evaluate(student, examples, judge=judge)
    assert [r["scored_by"] for r in res["records"]] == ["rule", "judge", "judge"]
    assert res["accuracy"] == 1.0 and (res["judged"], res["unresolved"]) == (2, 0)
    (call,) = judge.calls  # what the rule could not resolve, in one batch, greedy with 512 new tokens
    assert len(call["prompts"]) == 2 and all(p.startswith(PAPER_JUDGE_START) for p in call["prompts"])
    assert "## Model Response\n\\boxed{it increases}\n## Ground Truth Answer\nit is strictly increasing" in \
        call["prompts"][0]
    # the full response
    assert "## Model Response\n<think>4+5</think> The answer is nine.\n" in call["prompts"][1]
    assert (call["temperature"], call["top_p"], call["max_new_tokens"]) == (0.0, 1.0, 512)
    alone = ev.evaluate(student, examples, judge=None)  # no judge: those rows score 0 and are counted
    assert alone["accuracy"] == pytest.approx(1 / 3) and (alone["judged"], alone["unresolved"]) == (0, 2)


def test_choice_rows_reach_the_judge_with_their_options_and_cut_responses_too():
    ex, _ = load.to_example({"question": "Pick two.", "choices": ["one", "two"], "answer": 1},
                          BENCHMARKS["mmlu"], "x")
    student = ScriptedEngine(lambda p, k: ["I pick the second one",
                                           ("maybe \\boxed{A} ... no wait", "length"),
                                           ("so \\boxed{B} and", "length")][k])
    judge = ScriptedEngine(lambda p, k: '{"verdict": "wrong"}' if "\\boxed{A}" in p
                           else '{"verdict": "correct"}')
    res = ev.evaluate(student, [ex], samples=3, judge=judge)
    assert [r["scored_by"] for r in res["records"]] == ["judge", "judge", "rule"]  # a matching box is trusted
    assert [r["correct"] for r in res["records"]] == [True, False, True]
    assert [r["truncated"] for r in res["records"]] == [False, True, True]
    prompt = judge.calls[0]["prompts"][0]
    assert "## Question\nPick two.\n## Answer Options\nA. one\nB. two\n## Model Response\n" \
           "I pick the second one\n## Ground Truth Answer\nB\n" in prompt
    malformed = ev.evaluate(student, [ex], samples=3, judge=ScriptedEngine(lambda p, k: "Correct!"))
    assert malformed["judge_malformed"] == 2 and malformed["accuracy"] == pytest.approx(1 / 3)


# ---------------------------------------------------------------------------------------------------------
# BenchJudge: MultiChallenge and HLE

MULTICHALLENGE_ROWS = [  # the card's columns; a conversation ending with the user's turn
    {"question_id": "674552683acc22154b07a598", "axis": "INFERENCE_MEMORY",
     "conversation": [{"role": "user", "content": "I am allergic to nuts. Suggest a snack."},
                      {"role": "assistant", "content": "Try apple slices."},
                      {"role": "user", "content": "Now a dessert recipe?"}],
     "target_question": "Does the response avoid nuts?", "pass_criteria": "YES"},
    {"question_id": "67455268bc2ba9e69b8618f8", "axis": "INSTRUCTION_RETENTION",
     "conversation": {"role": ["user", "assistant", "user"],  # `datasets`' shape of a list-of-structs column
                      "content": ["Always answer in French.", "D'accord.", "What is the capital of Italy?"]},
     "target_question": "Does the response use English?", "pass_criteria": "NO"},
]


def test_multichallenge_sends_the_chat_and_passes_when_the_verdict_equals_pass_criteria(tmp_path):
    write_jsonl(tmp_path / "multichallenge.jsonl", MULTICHALLENGE_ROWS)
    examples, skipped = load.load_benchmark("multichallenge", str(tmp_path))
    assert skipped == {} and [e["answer"] for e in examples] == ["YES", "NO"]
    assert examples[0]["id"] == "674552683acc22154b07a598"
    student = ScriptedEngine(lambda chat, k: "<think>nuts are out</think>Fruit sorbet."
                             if "nuts" in chat[0]["content"] else "Rome.")
    verdicts = {"avoid nuts": "The sorbet has no nuts.\nVerdict: YES", "use English": "It is in English. YES"}
    judge = ScriptedEngine(lambda p, k: next(v for key, v in verdicts.items() if key in p))
    res = ev.evaluate(student, examples, judge=judge)
    chat = MULTICHALLENGE_ROWS[0]["conversation"]
    assert (student.calls[0]["prompts"][0]
            == chat[:2] + [{"role": "user", "content": f"{chat[2]['content']} {CLOSER}"}])
    assert student.calls[0]["prompts"][1][2] == {"role": "user",
                                                 "content": f"What is the capital of Italy? {CLOSER}"}
    assert [r["correct"] for r in res["records"]] == [True, False]  # YES == YES passes; YES != NO fails
    first = judge.calls[0]["prompts"][0]
    assert first.startswith("You are tasked with evaluating a model response to see if it meets a specific "
                            "criteria.")
    assert "<MODEL_RESPONSE>\nFruit sorbet.\n</MODEL_RESPONSE>" in first  # the reply, not the thinking
    assert "<CRITERIA>\nDoes the response avoid nuts?\n</CRITERIA>" in first
    assert judge.calls[0]["temperature"] == 0.0 and judge.calls[0]["max_new_tokens"] == 512
    no_judge = ev.evaluate(student, examples, judge=None)
    assert no_judge["unresolved"] == 2 and no_judge["accuracy"] == 0.0


def test_multichallenge_gets_the_shared_closer_after_its_last_user_turn_unless_turned_off(tmp_path):
    """The paper's single shared closer goes to every benchmark, MultiChallenge's conversation too: after the
    text of its last user turn, earlier turns untouched. --no-multichallenge-closer sends the conversation as
    it is."""
    write_jsonl(tmp_path / "multichallenge.jsonl", MULTICHALLENGE_ROWS[:1])
    student = ScriptedEngine(lambda chat, k: "Fruit sorbet.")
    ev.run_benchmarks(student, ["multichallenge"], data_dir=str(tmp_path), log=lambda *_: None)
    chat = MULTICHALLENGE_ROWS[0]["conversation"]
    (sent,) = student.calls[0]["prompts"]
    assert sent[:2] == chat[:2] and sent[2] == {"role": "user", "content": f"Now a dessert recipe? {CLOSER}"}
    (example,), _ = load.load_benchmark("multichallenge", str(tmp_path))
    assert score.student_prompt(example) == sent and example["messages"] == chat  # the example is unchanged
    untouched = ScriptedEngine(lambda chat, k: "Fruit sorbet.")
    ev.run_benchmarks(untouched, ["multichallenge"], data_dir=str(tmp_path), log=lambda *_: None,
                      multichallenge_closer=False)
    assert untouched.calls[0]["prompts"] == [chat]
    from transformers import HfArgumentParser

    parse = lambda *a: HfArgumentParser(ev.EvalConfig).parse_args_into_dataclasses(["--model", "m", *a])[0]
    assert (parse().multichallenge_closer is True
            and parse("--no-multichallenge-closer").multichallenge_closer is False)


@pytest.mark.parametrize("reply,verdict", [
    ("The reply keeps to French. YES", "YES"),
    ("There is no English here, no problem.\nNO", "NO"),  # lower-case "no" is prose
    ("Reasoning: it says yes to everything... Verdict: NO", "NO"),
    ('{"reasoning": "fine", "verdict": "YES"}', "YES"),
    ("<think>YES? NO?</think>Final: YES", "YES"),
    ("I cannot tell.", None),
])
def test_multichallenge_verdict_parsing(reply, verdict):
    assert llm.yes_no_verdict(reply) == verdict


HLE_ROWS = [  # the card's columns; image is "" for text questions, a data URI otherwise
    {"id": "668825f80a642802bdfeadfa", "question": "What is the smallest prime above 100?", "image": "",
     "image_preview": None, "answer": "101", "answer_type": "exactMatch", "author_name": "A",
     "rationale": "r", "rationale_image": None, "raw_subject": "Mathematics", "category": "Math",
     "canary": "c"},
    {"id": "66e8784d70625d8c7700315a", "question": "What does the figure show?",
     "image": "data:image/png;base64,iVBO", "image_preview": None, "answer": "a cat",
     "answer_type": "exactMatch", "author_name": "B", "rationale": "r", "rationale_image": None,
     "raw_subject": "Biology", "category": "Biology/Medicine", "canary": "c"},
    {"id": "66fc2282b7609fc1d8099125", "question": "Which is right?\n\nAnswer Choices:\nA. x\nB. y",
     "image": "", "image_preview": None, "answer": "B", "answer_type": "multipleChoice", "author_name": "C",
     "rationale": "r", "rationale_image": None, "raw_subject": "Logic", "category": "Other", "canary": "c"},
]


def test_hle_skips_image_rows_and_reads_the_cais_judge(tmp_path):
    write_jsonl(tmp_path / "hle.jsonl", HLE_ROWS)
    summary = ev.run_benchmarks(ScriptedEngine(lambda p, k: "<think>check 101</think> It is \\boxed{101}."),
                                ["hle"], judge=ScriptedEngine(lambda p, k: json.dumps(
                                    {"extracted_final_answer": "101", "reasoning": "same", "correct":
                                     "yes" if "[correct_answer]: 101" in p else "no", "confidence": 100})),
                                data_dir=str(tmp_path), log=lambda *_: None)
    res = summary["benchmarks"]["hle"]
    assert res["questions"] == 2 and res["skipped"] == {"image": 1} and res["protocol"] == "BenchJudge"
    assert res["accuracy"] == 0.5 and res["records"][0]["extracted"] == "101"


@pytest.mark.parametrize("reply,score", [
    ('{"extracted_final_answer": "101", "reasoning": "r", "correct": "yes", "confidence": 90}', 1.0),
    ('{"extracted_final_answer": "7", "reasoning": "r", "correct": "no", "confidence": 100, "strict": true}',
     0.0),
    (('<think>hm</think>{"extracted_final_answer": "101", "reasoning": "r", "correct": "yes", '
      '"confidence": 100}'), 1.0),
    ('{"extracted_final_answer": "101", "reasoning": "r", "correct": "Yes", "confidence": 100}', None),
    ('{"extracted_final_answer": "101", "correct": "yes", "confidence": 100}', None),  # a field missing
    ('{"extracted_final_answer": "1", "reasoning": "r", "correct": "yes", "confidence": 1, "note": 1}', None),
    # not the JSON asked
    ("extracted_final_answer: 101\nreasoning: same\ncorrect: yes\nconfidence: 100", None),
])
def test_hle_judge_parsing_is_strict(reply, score):
    parsed = llm.parse_hle(reply, {"answer": "101"})
    assert (parsed["score"] if parsed else None) == score


def test_hle_judge_gets_the_cais_prompt_with_the_full_response():
    prompt = llm.hle_prompt({"question": "Q?", "answer": "101"}, "<think>long thought</think> 101")
    assert prompt.startswith("Judge whether the following [response] to [question] is correct or not based "
                             "on the precise and unambiguous [correct_answer] below.")
    assert "[question]: Q?\n\n[response]: <think>long thought</think> 101\n" in prompt
    assert "[correct_answer]: 101\n" in prompt and prompt.endswith("confidence (integer 0-100).")


# ---------------------------------------------------------------------------------------------------------
# loading: local files and the hub formats


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def redux_row(question, answer, error_type="ok", correct_answer=None):
    """A row of edinburgh-dawg/mmlu-redux-2.0 as its card gives it."""
    return {"question": question, "choices": ["w", "x", "y", "z"], "answer": answer, "error_type": error_type,
            "source": "https://example.org", "correct_answer": correct_answer, "potential_reason": ""}


REDUX_TABLE = {  # two subjects with rows; the other 55 configs exist and are empty
    "anatomy": [redux_row("A1", 0), redux_row("A2", 1, "wrong_groundtruth", "3"),
                redux_row("A3", 2, "no_correct_answer", "the right one"),
                redux_row("A4", 0, "bad_question_clarity")],
    "virology": [redux_row("V1", 3), redux_row("V2", 1, "multiple_correct_answers", "(A) and (B)"),
                 redux_row("V3", 2, "wrong_groundtruth", "B")],
}


@pytest.fixture
def fake_hub(monkeypatch):
    """datasets.load_dataset answering from a table {(path, config, split): rows}; every call is recorded."""
    import datasets

    table, asked = {}, []

    def load_dataset(path, name=None, split=None, **kwargs):
        asked.append((path, name, split))
        if (path, name, split) not in table:
            raise FileNotFoundError(f"{path} has no config {name!r} split {split!r}")
        return list(table[(path, name, split)])  # a list answers len() and [i] as a Dataset does

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return table, asked


def test_mmlu_redux_loads_57_subject_configs_and_keeps_the_ok_rows(fake_hub):
    table, asked = fake_hub
    hub = "edinburgh-dawg/mmlu-redux-2.0"
    table.update({(hub, s, "test"): REDUX_TABLE.get(s, []) for s in llm.MMLU_REDUX_SUBJECTS})
    examples, skipped = load.load_benchmark("mmlu_redux")
    # every subject, in order, concatenated
    assert asked == [(hub, s, "test") for s in llm.MMLU_REDUX_SUBJECTS]
    assert [(e["stem"], e["answer"]) for e in examples] == [("A1", "A"), ("V1", "D")]
    assert skipped == {"error_type=wrong_groundtruth": 2, "error_type=no_correct_answer": 1,
                       "error_type=bad_question_clarity": 1, "error_type=multiple_correct_answers": 1}
    assert examples[0]["id"] == f"{hub}[anatomy][test][0]"
    corrected, skipped = load.load_benchmark("mmlu_redux", redux_rows="corrected")
    assert [(e["stem"], e["answer"]) for e in corrected] == [("A1", "A"), ("A2", "D"), ("A3", "C"),
                                                             ("A4", "A"), ("V1", "D"), ("V3", "B")]
    assert "C. the right one" in corrected[2]["question"]  # the option marked right was rewritten
    assert skipped == {"error_type=multiple_correct_answers": 1}
    asked.clear()
    assert len(load.load_benchmark("mmlu_redux", limit=1)[0]) == 1  # a limit stops loading the later subjects
    assert asked == [(hub, "abstract_algebra", "test"), (hub, "anatomy", "test")]


def test_ceval_loads_52_subject_configs_of_the_val_split(fake_hub):
    table, asked = fake_hub
    row = {"id": 0, "question": "1+1=?", "A": "1", "B": "2", "C": "3", "D": "4", "answer": "B",
           "explanation": ""}
    table.update({("ceval/ceval-exam", s, "val"): [] for s in llm.CEVAL_SUBJECTS})
    table[("ceval/ceval-exam", "logic", "val")] = [row]
    table[("ceval/ceval-exam", "physician", "val")] = [dict(row, answer="D")]
    examples, _ = load.load_benchmark("ceval")
    assert len(asked) == 52 and {split for _, _, split in asked} == {"val"}
    # ids stay apart
    assert [(e["id"], e["answer"]) for e in examples] == [("logic:0", "B"), ("physician:0", "D")]
    assert examples[0]["question"] == "1+1=?\n\nA. 1\nB. 2\nC. 3\nD. 4"


def test_aime2025_is_opencompass_two_configs(fake_hub):
    table, _asked = fake_hub
    table[("opencompass/AIME2025", "AIME2025-I", "test")] = [{"question": "Find x. Think step by step.",
                                                              "answer": "70"}]
    table[("opencompass/AIME2025", "AIME2025-II", "test")] = [{"question": "Find y.", "answer": "588"}]
    examples, _ = load.load_benchmark("aime2025")
    assert [(e["question"], e["answer"]) for e in examples] == [("Find x.", "70"), ("Find y.", "588")]
    table.pop(("opencompass/AIME2025", "AIME2025-II", "test"))
    with pytest.raises(RuntimeError,
                       match=r"hub opencompass/AIME2025 \(RuntimeError: config AIME2025-II, split test"):
        load.load_benchmark("aime2025")


def test_local_files_in_hub_format(tmp_path):
    write_jsonl(tmp_path / "mmlu_redux.jsonl",
                [dict(redux_row("A1", 0), config="anatomy"),
                 dict(redux_row("A2", 1, "wrong_groundtruth", "3"), config="anatomy")])
    examples, skipped = load.load_benchmark("mmlu_redux", str(tmp_path))
    assert [e["answer"] for e in examples] == ["A"] and skipped == {"error_type=wrong_groundtruth": 1}
    write_jsonl(tmp_path / "ceval.jsonl", [{"id": 3, "question": "Q", "A": "a", "B": "b", "C": "c", "D": "d",
                                            "answer": "C", "explanation": "", "config": "law"}])
    assert load.load_benchmark("ceval", str(tmp_path))[0][0]["id"] == "law:3"
    write_jsonl(tmp_path / "imo_answerbench.jsonl",
                [{"Problem ID": "imo-bench-algebra-001", "Problem": "Find f.", "Short Answer": "$f(x)=x$",
                  "Category": "Algebra", "Subcategory": "Functional Equation", "Source": "IMO"}])
    (imo,), _ = load.load_benchmark("imo_answerbench", str(tmp_path))
    assert (imo["id"], imo["answer"]) == ("imo-bench-algebra-001", "$f(x)=x$")
    # the GitHub JSONL's spelling
    upper = [{k.upper(): v for k, v in row.items()} for row in MULTICHALLENGE_ROWS[:1]]
    write_jsonl(tmp_path / "multichallenge.jsonl", upper)
    (mc,), _ = load.load_benchmark("multichallenge", str(tmp_path))
    assert mc["messages"][-1]["content"] == "Now a dessert recipe?" and mc["answer"] == "YES"


def test_local_benchmark_file_errors_name_file_and_line(tmp_path):
    (tmp_path / "math500.jsonl").write_text('{"problem": "1?", "answer": "1"}\n\n{"problem": "2?"}\n')
    with pytest.raises(ValueError, match=r"math500.jsonl:3: missing field"):
        load.load_benchmark("math500", data_dir=str(tmp_path))
    (tmp_path / "math500.jsonl").write_text('{"problem": "1?", "answer": "1"}\n{oops\n')
    with pytest.raises(ValueError, match=r"math500.jsonl:2: not valid JSON"):
        load.load_benchmark("math500", data_dir=str(tmp_path))
    # read whole: skipped rows do not count
    with pytest.raises(ValueError, match=r"math500.jsonl:2: not valid JSON"):
        load.load_benchmark("math500", data_dir=str(tmp_path), limit=1)
    (tmp_path / "math500.jsonl").write_text('{"problem": "1?", "answer": "1"}\n'
                                            '{"problem": "2?", "answer": "2"}\n')
    assert len(load.load_benchmark("math500", data_dir=str(tmp_path), limit=1)[0]) == 1
    write_jsonl(tmp_path / "multichallenge.jsonl", [dict(MULTICHALLENGE_ROWS[0], conversation="hello")])
    with pytest.raises(ValueError, match=r"multichallenge.jsonl:1: 'conversation' must be"):
        load.load_benchmark("multichallenge", data_dir=str(tmp_path))


@pytest.fixture
def offline(monkeypatch):
    """No hub: `datasets` fails at once instead of retrying the network (it reads these flags at import)."""
    import datasets
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def test_unreachable_benchmark_names_what_was_tried(tmp_path, offline):
    with pytest.raises(RuntimeError, match=r"benchmark 'aime2025' could not be loaded; tried: "
                                           r".*aime2025.jsonl \(not found\); hub opencompass/AIME2025 "
                                           r"\(.*config AIME2025-I"):
        load.load_benchmark("aime2025", data_dir=str(tmp_path))


# ---------------------------------------------------------------------------------------------------------
# failure-safety, the summary and the command line


def test_failures_are_reported_while_the_rest_complete(tmp_path):
    write_jsonl(tmp_path / "gsm8k.jsonl", [{"question": "1+1?", "answer": "x\n#### 2"},
                                           {"question": "2+2?", "answer": "y\n#### 4"}])
    write_jsonl(tmp_path / "mmlu.jsonl", [{"question": "Pick A.", "choices": ["a", "b"], "answer": 0}])
    write_jsonl(tmp_path / "math500.jsonl", [{"problem": "3?", "answer": "3"}])
    (tmp_path / "aime2026.jsonl").write_text("")  # an empty file
    write_jsonl(tmp_path / "hle.jsonl", HLE_ROWS[1:2])  # only an image row: nothing left
    write_jsonl(tmp_path / "mmlu_pro.jsonl", [{"question": "boom", "options": ["a", "b"], "answer": "A"}])

    def answer(p, k):
        if "boom" in p:
            raise RuntimeError("CUDA out of memory")  # the engine fails on one benchmark only
        return ("\\boxed{2}" if "1+1" in p else "four" if "2+2" in p else "\\boxed{A}" if "Pick" in p
                else "\\boxed{0}")

    updates = []
    summary = ev.run_benchmarks(ScriptedEngine(answer),
                                ["gsm8k", "no_such_set", "aime2026", "mmlu", "hle", "mmlu_pro", "math500"],
                                data_dir=str(tmp_path), log=lambda *_: None,
                                on_update=lambda s: updates.append((set(s["benchmarks"]), set(s["errors"]))))
    assert set(summary["benchmarks"]) == {"gsm8k", "mmlu", "math500"}
    errors = summary["errors"]
    assert "unknown benchmark 'no_such_set'" in errors["no_such_set"]
    assert errors["aime2026"] == "no questions to evaluate: the file or split is empty"
    assert errors["hle"] == "no questions to evaluate: every row was skipped (image: 1)"
    assert errors["mmlu_pro"] == "CUDA out of memory"
    assert (len(updates) == 7 and updates[0] == ({"gsm8k"}, set())
            and updates[1] == ({"gsm8k"}, {"no_such_set"}))
    assert (summary["benchmarks"]["gsm8k"]["accuracy"] == 0.5
            and summary["benchmarks"]["mmlu"]["accuracy"] == 1.0)
    # unweighted over each family's benchmarks
    assert summary["macro"] == {"math": pytest.approx(0.25), "llm": 1.0}
    table = report.markdown_table(summary)
    assert "| **math (macro)** | math | mean of 2 | 25.0 |" in table and "| no_such_set | failed |" in table
    # one unboxed: unresolved
    assert "| gsm8k | math | Exact+Judge | 50.0 | 50.0 | 2 x 1 | 0 | 0 | 1 |" in table
    assert "failed: hle: no questions to evaluate: every row was skipped (image: 1)" in table
    limited = ev.run_benchmarks(ScriptedEngine(answer), ["math500", "arithmetic"], data_dir=str(tmp_path),
                                limit=0, log=lambda *_: None)
    assert limited["errors"] == {"math500": "no questions to evaluate: --limit 0",
                                 "arithmetic": "no questions to evaluate: --limit 0"}
    assert limited["benchmarks"] == {} and limited["macro"] == {}


def test_mean_stderr_of_nothing_does_not_crash():
    assert all(v != v for v in score.mean_stderr([]))  # noqa: PLR0124 - nan, nan (only NaN differs from itself)
    assert score.mean_stderr([1.0]) == (1.0, 0.0)


def test_transformers_engine_takes_a_conversation(tiny_model):
    from engines.transformers_engine import TransformersEngine
    from models import load_model

    model, tok = load_model(tiny_model)
    chat = MULTICHALLENGE_ROWS[0]["conversation"]
    (group,) = TransformersEngine(model, tok).generate([chat], n=1, max_new_tokens=3, temperature=0.0)
    assert group[0].prompt_ids == list(tok.apply_chat_template(chat, add_generation_prompt=True,
                                                               tokenize=True, return_dict=False))


def test_eval_cli_end_to_end_on_a_tiny_model(tiny_model, tmp_path):
    write_jsonl(tmp_path / "math500.jsonl", [{"problem": f"What is {i} + 1? Think step by step.",
                                              "answer": str(i + 1)} for i in range(4)])
    (tmp_path / "aime2026.jsonl").write_text("\n")  # empty
    res = subprocess.run([sys.executable, "eval.py", "--model", tiny_model,
                          "--benchmarks", "math500,gsm8k,nosuch,aime2026",
                          "--data-dir", str(tmp_path), "--max-new-tokens", "6", "--samples", "2",
                          "--out", str(tmp_path / "res.json"), "--responses", str(tmp_path / "resp.jsonl"),
                          "--cache-dir", str(tmp_path / "cache")],
                         cwd=ROOT, capture_output=True, text=True, check=False,
                         env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    assert res.returncode == 1, res.stderr[-2000:]  # requested benchmarks failed: the process says so
    assert "| math500 | math | Exact+Judge |" in res.stdout and "| gsm8k | failed |" in res.stdout
    assert "3 of 4 benchmarks failed: gsm8k, nosuch, aime2026" in res.stderr
    with open(tmp_path / "res.json") as f:
        summary = json.load(f)
    assert summary["benchmarks"]["math500"]["questions"] == 4
    assert set(summary["errors"]) == {"gsm8k", "nosuch", "aime2026"}
    assert summary["benchmarks"]["math500"]["unresolved"] + summary["benchmarks"]["math500"]["judged"] <= 8
    with open(tmp_path / "resp.jsonl") as f:
        records = [json.loads(line) for line in f]
    assert len(records) == 8 and all(r["benchmark"] == "math500" and "extracted" in r for r in records)


def test_grader_audit_on_gsm8k_gold_solutions(capsys):
    """GSM8K test solutions, rewritten to end in \\boxed{}, graded as if they were responses: ~100% against
    their own answer, ~0% against another question's answer."""
    examples = load_jsonl(os.path.join(ROOT, "tests", "data", "gsm8k_test.jsonl"))
    assert len(examples) == 1319
    own = sum(grade(ex["solution"], ex["answer"]) for ex in examples) / len(examples)
    # each solution against the next question's answer
    pairs = list(zip(examples, examples[1:] + examples[:1]))
    shifted = sum(grade(ex["solution"], other["answer"]) for ex, other in pairs) / len(pairs)
    differing = [(ex, other) for ex, other in pairs if float(ex["answer"]) != float(other["answer"])]
    false_positives = int(sum(grade(ex["solution"], other["answer"]) for ex, other in differing))
    with capsys.disabled():
        print(f"\n[grader audit] GSM8K test ({len(examples)}): own answer {100 * own:.2f}% correct; another "
              f"question's answer {100 * shifted:.2f}% correct ({len(pairs) - len(differing)} pairs share "
              f"the same answer; {false_positives} of {len(differing)} pairs with different answers "
              "graded correct)")
    assert own >= 0.999
    assert false_positives == 0 and shifted <= 0.02


def test_failed_judge_calls_are_failures_not_wrong_answers(tiny_model, tmp_path):
    """Was: with the judge down the table showed 0.0 with "judged 6" and eval.py exited 0; only
    judge_malformed in the JSON said anything. A judge that answers 500 to everything (on 127.0.0.1, stopped
    here) and one with no server at all."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Failing(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(500)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Failing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    # prose: every response goes to the judge
    write_jsonl(tmp_path / "math500.jsonl",
                [{"problem": f"Describe f{i}.", "answer": "it is strictly increasing"} for i in range(3)])
    run = lambda url: subprocess.run(
        [sys.executable, "eval.py", "--model", tiny_model, "--benchmarks", "math500",
         "--data-dir", str(tmp_path), "--max-new-tokens", "4", "--samples", "2", "--judge", "j",
         "--judge-url", url, "--judge-timeout", "2", "--judge-retries", "0",
         "--out", str(tmp_path / "res.json"), "--no-cache"],
        cwd=ROOT, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120,
        check=False)
    try:
        res = run(f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()
    assert res.returncode == 1, res.stderr[-2000:]
    assert "[warning] math500: 6 of 6 judge calls failed (no reply): scored 0, so the score is only a " \
           "lower bound" in res.stdout + res.stderr
    assert "judge failed: math500: 6 of 6 judge calls (scored 0)" in res.stdout
    assert "scores that rest on failed judge calls: math500" in res.stderr
    with open(tmp_path / "res.json") as f:
        math500 = json.load(f)["benchmarks"]["math500"]
    assert (math500["judge_failed"], math500["judge_malformed"]) == (6, 0)
    res = run("http://127.0.0.1:9")  # nothing listens there
    assert res.returncode == 1 and "no server answers at http://127.0.0.1:9/v1/chat/completions" in res.stderr
    assert "Loading weights" not in res.stderr  # said before the model loads


def test_a_cut_weight_file_and_a_missing_column_name_the_file(tiny_model, tmp_path):
    """Was: a raw SafetensorError without the path; `KeyError: 'Incorrect Answer 1'` without file or line."""
    import shutil

    model = str(tmp_path / "m")
    shutil.copytree(tiny_model, model)
    weights = os.path.join(model, "model.safetensors")
    with open(weights, "r+b") as f:
        f.truncate(os.path.getsize(weights) // 2)
    with pytest.raises(ValueError, match=r"--model .*m: .*m/model.safetensors: truncated "
                                         r"\(\d+ bytes of \d+\); evaluate a complete checkpoint"):
        ev.main(ev.EvalConfig(model=model, benchmarks="arithmetic"))
    row = {"Question": "Which?", "Correct Answer": "a", "Incorrect Answer 2": "b", "Incorrect Answer 3": "c",
           "Record ID": "r1"}
    write_jsonl(tmp_path / "gpqa_diamond.jsonl", [row])
    with pytest.raises(ValueError,
                       match=r"gpqa_diamond.jsonl:1: missing field\(s\) \['Incorrect Answer 1'\]"):
        load.load_benchmark("gpqa_diamond", str(tmp_path))
