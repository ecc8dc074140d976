"""Data loading: validation errors name the file and line; GSM8K's format; the resumable stream."""
import json

import pytest

from data import load_examples, load_jsonl, make_arithmetic, take
from reward import grade


def write(tmp_path, lines):
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_loads_fields_and_optional_ones(tmp_path):
    path = write(tmp_path, [json.dumps({"question": "Q1", "answer": 3}),
                            "",
                            json.dumps({"question": "Q2", "answer": "x", "solution": "s", "image": "a.png", "id": 9})])
    ex = load_jsonl(path)
    assert ex[0] == {"id": "d.jsonl:1", "question": "Q1", "answer": "3"}
    assert ex[1] == {"id": "9", "question": "Q2", "answer": "x", "solution": "s", "image": "a.png"}


@pytest.mark.parametrize("line,message", [
    ("{not json", "d.jsonl:2: not valid JSON"),
    ('{"answer": "1"}', "d.jsonl:2: missing field 'question'"),
    ('{"question": "q"}', "d.jsonl:2: missing field 'answer'"),
    ('{"question": "", "answer": "1"}', "d.jsonl:2: 'question' must be a non-empty string"),
    ('{"question": "q", "answer": null}', "d.jsonl:2: 'answer' must be a non-empty string or number"),
    ('[1, 2]', "d.jsonl:2: expected a JSON object"),
    ('{"question": "q", "answer": "1", "solution": 5}', "d.jsonl:2: 'solution' must be a string"),
])
def test_bad_lines_name_file_and_line(tmp_path, line, message):
    path = write(tmp_path, [json.dumps({"question": "ok", "answer": "1"}), line])
    with pytest.raises(ValueError, match=message):
        load_jsonl(path)


def test_missing_file_and_empty_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_examples(str(tmp_path / "nope.jsonl"))
    with pytest.raises(ValueError, match="no examples"):
        load_jsonl(write(tmp_path, [""]))


def test_gsm8k_answers_become_solution_and_short_answer(tmp_path):
    record = {"question": "Q", "answer": "She sold 48/2 = <<48/2=24>>24 clips.\nTotal 1,072.\n#### 1,072"}
    (ex,) = load_jsonl(write(tmp_path, [json.dumps(record)]))
    assert ex["answer"] == "1072"
    assert ex["solution"] == "She sold 48/2 = 24 clips.\nTotal 1,072.\nThe answer is \\boxed{1072}."
    assert grade(ex["solution"], ex["answer"]) == 1.0


def test_arithmetic_task_has_gradable_gold_solutions_and_a_disjoint_test_split():
    train, test = make_arithmetic(seed=1), make_arithmetic(seed=1, split="test")
    assert len(train) + len(test) == 20 * 20 + 20 * 21 // 2  # every a+b and every a-b with a >= b
    assert len({e["question"] for e in train}) == len(train)
    assert not {e["id"] for e in train} & {e["id"] for e in test}
    assert all(grade(e["solution"], e["answer"]) == 1.0 for e in train + test)
    assert all(int(e["answer"]) >= 0 for e in train)
    assert make_arithmetic(5, seed=1) == train[:5] != make_arithmetic(5, seed=2)
    assert {e["id"] for e in make_arithmetic(seed=2, split="test")} == {e["id"] for e in test}


def test_take_is_a_resumable_seeded_stream():
    examples = [{"id": str(i)} for i in range(10)]
    a, epoch, pos = take(examples, 4, 0, 0, 0)
    b, epoch, pos = take(examples, 4, 0, epoch, pos)
    c, epoch, pos = take(examples, 4, 0, epoch, pos)  # crosses into the second pass
    first_pass = [e["id"] for e in a + b + c[:2]]
    assert sorted(first_pass) == [str(i) for i in range(10)] and (epoch, pos) == (1, 2)
    again, _, _ = take(examples, 12, 0, 0, 0)
    assert [e["id"] for e in again] == [e["id"] for e in a + b + c]
