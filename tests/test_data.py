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
                            json.dumps({"question": "Q2", "answer": "x", "solution": "s", "image": "a.png",
                                        "id": 9})])
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")  # an image path is relative to the data file
    ex = load_jsonl(path)
    assert ex[0] == {"id": "d.jsonl:1", "question": "Q1", "answer": "3"}
    assert ex[1] == {"id": "9", "question": "Q2", "answer": "x", "solution": "s",
                     "images": [str(tmp_path / "a.png")]}


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


def test_arithmetic_default_output_is_unchanged():
    """The demo's numbers and the golden tests depend on this exact list (order included)."""
    import hashlib

    train = make_arithmetic()
    assert train[0] == {"id": "arith:3+16", "question": "What is 3 + 16?", "answer": "19",
                        "solution": "<think>3 + 16 = 19</think> The answer is \\boxed{19}."}
    assert hashlib.sha256(json.dumps(train).encode()).hexdigest()[:16] == "a5c30a0fb5ba44f0"


def test_take_is_a_resumable_seeded_stream():
    examples = [{"id": str(i)} for i in range(12)]
    a, epoch, pos = take(examples, 4, 0, 0, 0)
    b, epoch, pos = take(examples, 4, 0, epoch, pos)
    c, epoch, pos = take(examples, 4, 0, epoch, pos)  # ends the first pass exactly
    assert sorted(int(e["id"]) for e in a + b + c) == list(range(12)) and (epoch, pos) == (0, 12)
    d, epoch, pos = take(examples, 4, 0, epoch, pos)  # the second pass, another order
    assert (epoch, pos) == (1, 4) and [e["id"] for e in d] != [e["id"] for e in a]
    assert take(examples, 4, 0, 0, 4)[0] == b  # the position alone resumes the stream


def test_a_batch_never_holds_a_question_twice_across_a_pass_boundary():
    """10 questions, 4 per step: the third step would take the 2 left in the pass and 2 of the next pass,
    possibly the same questions. A new pass starts only for whole batches: the 2 left are skipped."""
    examples = [{"id": str(i)} for i in range(10)]
    epoch, pos, seen = 0, 0, []
    for _ in range(50):
        batch, epoch, pos = take(examples, 4, 0, epoch, pos)
        assert len({e["id"] for e in batch}) == 4
        seen.append(epoch)
    assert seen[:5] == [0, 0, 1, 1, 2]  # two whole batches per pass
    with pytest.raises(ValueError, match="a batch of 11 distinct examples cannot come from 10"):
        take(examples, 11, 0, 0, 0)


def test_non_utf8_byte_names_file_and_line(tmp_path):
    path = tmp_path / "d.jsonl"
    good = json.dumps({"question": "ok", "answer": "1"}).encode()
    path.write_bytes(good + b'\n{"question": "caf\xe9", "answer": 1}\n')  # Latin-1 e-acute
    with pytest.raises(ValueError, match=r"d.jsonl:2: not UTF-8 \(byte 0xe9"):
        load_jsonl(str(path))
    path.write_bytes(b"\xef\xbb\xbf" + good + b"\n")  # a UTF-8 byte-order mark is fine
    assert load_jsonl(str(path))[0]["question"] == "ok"


def test_duplicate_ids_name_both_lines_or_keep_the_first(tmp_path, capsys):
    path = write(tmp_path, [json.dumps({"id": 7, "question": "Q1", "answer": "1"}),
                            json.dumps({"id": 8, "question": "Q2", "answer": "2"}),
                            json.dumps({"id": "7", "question": "Q3", "answer": "3"})])
    with pytest.raises(ValueError,
                       match=r"d.jsonl:3: duplicate id '7' \(first at .*d.jsonl:1\).*--dedup-ids"):
        load_examples(path)
    kept = load_examples(path, dedup_ids=True)
    assert [e["question"] for e in kept] == ["Q1", "Q2"]
    assert "dropped 1 rows" in capsys.readouterr().out


NUMBER_ANSWERS = [  # (the answer as the JSON line writes it, the gold text it becomes)
    ("1e-05", "0.00001"), ("1E-7", "0.0000001"), ("1.5e-7", "0.00000015"), ("2.50", "2.5"),
    ("1000.0", "1000.0"), ("-3e+2", "-300.0"), ("1e20", "100000000000000000000"), ("2.5E3", "2500.0"),
    ("0.1", "0.1"), ("7", "7"), ("-0", "0"), ("12345678901234567890123", "12345678901234567890123"),
    ("3.14159", "3.14159"),
]


def test_number_answers_are_their_exact_decimal_text(tmp_path):
    """Was: str(answer): 1e-05 stayed "1e-05" (never equal to \\boxed{0.00001}), 1e20 "1e+20"."""
    path = write(tmp_path, [json.dumps({"question": f"q{i}"})[:-1] + f', "answer": {raw}}}'
                            for i, (raw, _) in enumerate(NUMBER_ANSWERS)])
    examples = load_jsonl(path)
    assert [e["answer"] for e in examples] == [text for _, text in NUMBER_ANSWERS]
    for e, (raw, text) in zip(examples, NUMBER_ANSWERS):
        assert grade(f"\\boxed{{{text}}}", e["answer"]) == 1.0
        assert grade(f"\\boxed{{{raw}}}", e["answer"]) == 1.0
    assert grade("\\boxed{0.0001}", examples[0]["answer"]) == 0.0


@pytest.mark.parametrize("raw", ["NaN", "Infinity", "-Infinity"])
def test_a_non_finite_number_answer_names_file_and_line(tmp_path, raw):
    """Was: "nan" and "inf" became gold answers that no response can match."""
    path = write(tmp_path, [json.dumps({"question": "ok", "answer": "1"}),
                            f'{{"question": "q", "answer": {raw}}}'])
    with pytest.raises(ValueError, match=r"d.jsonl:2: 'answer' must be a non-empty string or number \(a "
                                         r"finite one\), got -?(nan|inf)"):
        load_jsonl(path)


def test_benchmark_number_answers_are_their_exact_decimal_text():
    """A benchmark row's gold read by the generic loader (a local file in the hub's columns) and by the
    converters that pass a free-form gold on (BabyVision's blank answers, VideoMMMU's open questions)."""
    from benchmarks import BENCHMARKS, load

    for raw, text in NUMBER_ANSWERS:
        row = json.loads(f'{{"problem": "What?", "answer": {raw}, "unique_id": "u"}}')
        example, why = load.to_example(row, BENCHMARKS["math500"], "math500.jsonl:1")
        assert why is None and example["answer"] == text
        assert grade(f"\\boxed{{{raw}}}", example["answer"]) == 1.0
    row = json.loads('{"problem": "What?", "answer": NaN, "unique_id": "u"}')
    assert load.to_example(row, BENCHMARKS["math500"], "math500.jsonl:1") == (None, "answer_format")
    from benchmarks.vlm import convert_babyvision

    assert convert_babyvision({"ansType": "blank", "blankAns": 1e-05}, {}, "w")["answer"] == "0.00001"
