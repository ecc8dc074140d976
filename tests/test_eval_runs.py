"""eval.py's runs as a user meets them: a run killed mid-benchmark and started again ends with the file an
uninterrupted run writes (real processes on a tiny local model and local benchmark files), one writer per
output, the results file in lm-evaluation-harness's shape, per-sample logs, the row cache."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from benchmarks import score
from benchmarks.cache import OutputLocked, RowCache, lock_outputs, release_outputs
from conftest import ROOT
from test_eval import ScriptedEngine

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
# timings, dates and the paths of the run's own files: everything else must be equal
VOLATILE = {"date", "start_time", "end_time", "total_evaluation_time_seconds", "config", "git_hash"}


def bench_files(folder, rows=16):
    with open(folder / "math500.jsonl", "w") as f:
        f.writelines(json.dumps({"problem": f"What is {i} + 1?", "answer": str(i + 1)}) + "\n"
                     for i in range(rows))
    with open(folder / "gsm8k.jsonl", "w") as f:
        f.writelines(json.dumps({"question": f"Tom has {i} apples and buys 2. How many?",
                                 "answer": f"{i} + 2\n#### {i + 2}"}) + "\n" for i in range(rows))


def command(model, data, out, cache, *extra):
    return [sys.executable, "eval.py", "--model", model, "--benchmarks", "math500,gsm8k",
            "--data-dir", str(data), "--limit", "12", "--max-new-tokens", "12", "--samples", "2",
            "--chunk-size", "2",
            "--out", str(out), "--responses", str(out).replace(".json", "_responses.jsonl"), "--log-samples",
            "--cache-dir", str(cache), *extra]


def comparable(path):
    with open(path) as f:
        result = {k: v for k, v in json.load(f).items() if k not in VOLATILE}
    for r in result["benchmarks"].values():
        r.pop("seconds"), r.pop("cached")
    return result


def lines(path):
    with open(path) as f:
        return f.read().splitlines()


def test_a_killed_and_rerun_evaluation_writes_what_an_uninterrupted_one_writes(tiny_model, tmp_path):
    """Was: killed during its second benchmark, --out held the first alone with a macro average, marked as
    nothing unfinished, and a rerun recomputed everything."""
    bench_files(tmp_path)
    whole = tmp_path / "whole.json"
    run = subprocess.run(command(tiny_model, tmp_path, whole, tmp_path / "cache_whole"), cwd=ROOT, env=ENV,
                         capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stderr[-3000:]

    out, cache = tmp_path / "killed.json", tmp_path / "cache_killed"
    proc = subprocess.Popen(command(tiny_model, tmp_path, out, cache), cwd=ROOT, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:  # killed once gsm8k (the second) has a chunk
        files = [f for d in cache.glob("*") for f in d.glob("gsm8k-*.jsonl")]
        if files and len(lines(files[0])) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with open(out) as f:
        killed = json.load(f)
    assert killed["status"] == "incomplete" and killed["results"] == {} and killed["macro"] == {}
    assert killed["finished"] == ["math500"] and killed["pending"] == ["gsm8k"]

    rerun = subprocess.run(command(tiny_model, tmp_path, out, cache), cwd=ROOT, env=ENV, capture_output=True,
                           text=True, timeout=600, check=False)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    reused = next(line for line in rerun.stderr.splitlines() if line.startswith("rows taken from the cache"))
    assert "math500 12" in reused and "gsm8k" in reused and "gsm8k 12" not in reused
    assert comparable(out) == comparable(whole)
    assert comparable(out)["status"] == "complete"
    assert lines(tmp_path / "killed_responses.jsonl") == lines(tmp_path / "whole_responses.jsonl")
    for name in ("math500", "gsm8k"):
        assert lines(tmp_path / f"killed_samples_{name}.jsonl") == \
            lines(tmp_path / f"whole_samples_{name}.jsonl")


def test_the_results_file_has_lm_evaluation_harness_s_shape(tiny_model, tmp_path):
    """The top-level keys and metric names of lm-evaluation-harness's results_*.json (lm_eval/evaluator.py's
    results dict, written by loggers/evaluation_tracker.py) and the fields of its samples_*.jsonl, so its
    readers read ours: results[task]["acc,none"], n-samples, configs, versions, ..."""
    bench_files(tmp_path, rows=3)
    out = tmp_path / "res.json"
    uncached = command(tiny_model, tmp_path, out, tmp_path / "cache")[:-2] + ["--no-cache"]
    run = subprocess.run(uncached, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600,
                         check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    with open(out) as f:
        result = json.load(f)
    assert {"results", "groups", "group_subtasks", "configs", "versions", "n-shot", "higher_is_better",
            "n-samples", "config", "git_hash", "date", "model_name", "model_name_sanitized", "start_time",
            "end_time", "total_evaluation_time_seconds", "task_hashes"} <= set(result)
    assert set(result["results"]) == {"math500", "gsm8k"}
    assert set(result["results"]["gsm8k"]) == {"alias", "acc,none", "acc_stderr,none"}
    assert result["results"]["gsm8k"]["acc,none"] == result["benchmarks"]["gsm8k"]["accuracy"]
    assert result["n-samples"]["math500"] == {"original": 3, "effective": 3}
    assert result["configs"]["gsm8k"]["dataset_path"] == "openai/gsm8k" and result["n-shot"]["gsm8k"] == 0
    assert result["higher_is_better"]["gsm8k"] == {"acc": True}
    assert result["groups"]["math"]["acc,none"] == result["macro"]["math"]
    assert result["config"]["limit"] == 12 and result["config"]["gen_kwargs"]["temperature"] == 0.6
    assert result["status"] == "complete" and result["pending"] == []
    samples = [json.loads(line) for line in lines(tmp_path / "res_samples_gsm8k.jsonl")]
    assert len(samples) == 3 and [s["doc_id"] for s in samples] == [0, 1, 2]
    assert {"doc_id", "doc", "target", "arguments", "resps", "filtered_resps", "filter", "metrics",
            "doc_hash", "prompt_hash", "target_hash", "acc"} <= set(samples[0])
    assert samples[0]["target"] == "2" and len(samples[0]["resps"][0]) == 2  # k = 2 responses per question
    assert samples[0]["doc"]["question"] == "Tom has 0 apples and buys 2. How many?"
    assert "gsm8k: 100%" in run.stderr  # a progress bar per benchmark


def test_one_writer_per_output(tiny_model, tmp_path):
    """Was: two eval.py runs on one --out / --responses both exited 0 with the responses of both mixed."""
    bench_files(tmp_path)
    out = tmp_path / "res.json"
    log = open(tmp_path / "first.log", "w")  # noqa: SIM115 (the first run's stderr, read when it ends)
    # the first run is made long enough (16 questions, 256 tokens) for the other two to start and be refused
    # meanwhile (with 64 tokens it once ended first, in the vLLM environment: the test then failed)
    slow = command(tiny_model, tmp_path, out, tmp_path / "cache", "--no-cache", "--limit", "16",
                   "--max-new-tokens", "256")
    first = subprocess.Popen(slow, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.time() + 120
        while not out.exists() and time.time() < deadline:  # written once the locks are held
            time.sleep(0.05)
        second = subprocess.run(command(tiny_model, tmp_path, out, tmp_path / "cache"), cwd=ROOT, env=ENV,
                                capture_output=True, text=True, timeout=120, check=False)
        other = command(tiny_model, tmp_path, tmp_path / "other.json", tmp_path / "cache")
        other[other.index("--responses") + 1] = str(tmp_path / "res_responses.jsonl")  # the first one's
        third = subprocess.run(other, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120,
                               check=False)
        assert first.poll() is None, "the first run ended before the others started"
    finally:
        first.wait(timeout=600)
        log.close()
    assert first.returncode == 0, (tmp_path / "first.log").read_text()[-3000:]
    assert second.returncode != 0 and f"is being written by another eval.py (pid {first.pid}" in second.stderr
    assert "res.json" in second.stderr and "Loading weights" not in second.stderr  # before the model loads
    assert third.returncode != 0 and "res_responses.jsonl is being written" in third.stderr
    assert not (tmp_path / "other.json").exists()
    with open(out) as f:
        assert json.load(f)["status"] == "complete"
    assert len(lines(tmp_path / "res_responses.jsonl")) == 2 * 16 * 2  # one run's responses, not two
    release_outputs(lock_outputs([out]))  # free again once the writer has ended (a kill frees it too: above)


def test_lock_outputs_refuses_a_held_output_and_leaves_no_file(tmp_path):
    locks = tmp_path / "locks"
    held = lock_outputs([tmp_path / "a.json", None], root=locks)
    busy = rf"a.json is being written by another eval.py \(pid {os.getpid()}"
    with pytest.raises(OutputLocked, match=busy):
        # flock locks belong to the open file: a second open, even in this process, is refused
        lock_outputs([tmp_path / "b.json", tmp_path / "a.json"], root=locks)
    b = lock_outputs([tmp_path / "b.json"], root=locks)  # b was released when a refused the run
    waiting = open(held[0].name)  # noqa: SIM115 (a run that opened a's lock file before it was deleted)
    release_outputs(held)
    release_outputs(b)
    assert list(locks.iterdir()) == []  # a run that ends deletes its lock files
    again = lock_outputs([tmp_path / "a.json"], root=locks)
    import fcntl

    fcntl.flock(waiting, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the deleted file's lock guards nothing ...
    with pytest.raises(OutputLocked):  # ... the file now at that path does
        lock_outputs([tmp_path / "a.json"], root=locks)
    waiting.close()
    release_outputs(again)


# ---------------------------------------------------------------------------------------------------------
# the row cache


def test_cached_rows_are_not_generated_again_and_their_verdicts_are_reused_only_for_the_same_judge(tmp_path):
    examples = [{"id": f"q{i}", "question": f"What is {i}?", "answer": "it is a number"} for i in range(5)]
    student = ScriptedEngine(lambda p, k: f"The answer is {k}.")
    judge = ScriptedEngine(lambda p, k: '{"verdict": "correct"}')
    path = str(tmp_path / "bench.jsonl")

    def run(judge_id, rows=examples):
        return score.evaluate(student, rows, samples=2, judge=judge, chunk=2, cache=RowCache(path, judge_id))

    first = run("j1")
    assert len(student.calls) == 3 and len(lines(path)) == 3 and first["cached"] == 0  # chunks of 2, 2, 1
    again = run("j1")
    assert len(student.calls) == 3 and len(judge.calls) == 3 and again["cached"] == 5
    assert again["records"] == first["records"] and len(lines(path)) == 3
    other = run("j2")
    assert len(student.calls) == 3 and len(judge.calls) == 6  # re-judged, not re-generated
    assert other["accuracy"] == 1.0 and len(lines(path)) == 6
    new_gold = [dict(ex, answer="something else") if ex["id"] == "q4" else ex for ex in examples]
    run("j2", new_gold)
    assert len(judge.calls) == 7 and len(judge.calls[-1]["prompts"]) == 2  # only the row whose gold changed


def test_a_failed_judge_call_is_asked_again_on_a_rerun(tmp_path):
    class DownJudge:  # a remote judge whose requests failed for good: no rollout for any prompt
        calls = 0

        def generate(self, prompts, n=1, **sampling):
            DownJudge.calls += 1
            return [[] for _ in prompts]

    examples = [{"id": "q", "question": "Describe it.", "answer": "it is strictly increasing"}]
    student = ScriptedEngine(lambda p, k: "It goes up.")
    path = str(tmp_path / "bench.jsonl")
    down = score.evaluate(student, examples, judge=DownJudge(), cache=RowCache(path, judge="j"))
    assert down["judge_failed"] == 1 and DownJudge.calls == 1
    up = ScriptedEngine(lambda p, k: '{"verdict": "correct"}')
    again = score.evaluate(student, examples, judge=up, cache=RowCache(path, judge="j"))
    assert again["accuracy"] == 1.0 and again["judge_failed"] == 0 and len(up.calls) == 1
    assert len(student.calls) == 1  # the response itself was kept


def test_a_cache_line_cut_by_a_kill_is_dropped_and_its_chunk_generated_again(tmp_path):
    examples = [{"id": f"q{i}", "question": f"{i}+1?", "answer": str(i + 1)} for i in range(4)]
    student = ScriptedEngine(lambda p, k: "\\boxed{1}")
    path = tmp_path / "bench.jsonl"
    score.evaluate(student, examples, chunk=2, cache=RowCache(str(path)))
    text = path.read_text()
    path.write_text(text[:-40])  # the second chunk's line cut short
    res = score.evaluate(student, examples, chunk=2, cache=RowCache(str(path)))
    assert res["cached"] == 2 and student.calls[-1]["prompts"] == [student.calls[1]["prompts"][0],
                                                                   student.calls[1]["prompts"][1]]
