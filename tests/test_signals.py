"""A scheduler's signals and other ways a run is asked to stop (docs/failure.md): SIGTERM, SLURM's warning
signal, Ctrl-C or a file OUT/stop stop the run at its next safe point with a checkpoint, release the lock and
exit with 75 ("try again"); the run then resumes exactly. A second signal stops at once. An evaluation a crash
cut short is run when the run resumes. Every run here is a real process that really receives the signal
(tests/parity_train.py sends it to itself, through the kernel, at a chosen phase of a chosen step)."""
import json
import os
import subprocess
import sys
import threading
import time

import torch
from safetensors.torch import load_file

from conftest import ROOT
from device import MEASURED
from test_train import ARGS, read_metrics

ENV = {**os.environ, "OMP_NUM_THREADS": "1",
       "PYTHONPATH": os.pathsep.join([ROOT, os.path.join(ROOT, "tests")])}


def train(tiny_model, out, *extra, signal=None, env=None, steps=3):
    cmd = [sys.executable, os.path.join("tests", "parity_train.py"), "--student", tiny_model, *ARGS,
           "--steps", str(steps), "--out-dir", str(out), *extra]
    env = {**ENV, **({"ZPPO_SIGNAL": signal} if signal else {}), **(env or {})}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)


def latest(out):
    with open(os.path.join(out, "latest")) as f:
        return f.read().strip()


def same_run(a, b, step):
    """The same metrics (the machine's measurements aside) and the same weights at `step`."""
    drop = lambda m: {k: v for k, v in m.items() if not k.startswith(MEASURED)}
    assert [drop(m) for m in read_metrics(a)] == [drop(m) for m in read_metrics(b)]
    wa = load_file(os.path.join(a, "checkpoints", f"step_{step:06d}", "model.safetensors"))
    wb = load_file(os.path.join(b, "checkpoints", f"step_{step:06d}", "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_a_signal_stops_the_run_at_a_safe_point_with_a_checkpoint_and_it_resumes_exactly(tiny_model,
                                                                                           tmp_path):
    """SIGTERM in step 2's rollouts (before its update): the step is dropped, step 1's checkpoint written
    (--save-every 10 would have saved nothing before step 3), the lock released, exit status 75. SLURM's
    warning signal (SIGUSR1) in step 2's update: the step finishes and its checkpoint is written. Both runs
    then resume to step 3 with the metrics and weights of an uninterrupted run."""
    straight = tmp_path / "straight"
    assert train(tiny_model, straight).returncode == 0

    dropped = tmp_path / "dropped"
    res = train(tiny_model, dropped, signal="rollout:2:SIGTERM")
    assert res.returncode == 75, res.stderr[-3000:]
    assert "SIGTERM: stopping at the next safe point" in res.stderr
    assert "stopped as asked (SIGTERM) at step 1" in res.stderr
    assert latest(dropped) == "step_000001" and [m["step"] for m in read_metrics(dropped)] == [1]
    assert not os.path.exists(dropped / "lock")

    finished = tmp_path / "finished"
    res = train(tiny_model, finished, signal="update:2:SIGUSR1")
    assert res.returncode == 75, res.stderr[-3000:]
    assert latest(finished) == "step_000002" and [m["step"] for m in read_metrics(finished)] == [1, 2]

    for out in (dropped, finished):
        res = train(tiny_model, out, "--resume", str(out))
        assert res.returncode == 0, res.stderr[-3000:]
        same_run(out, straight, 3)


def test_a_stop_file_from_a_job_script_stops_the_run_and_is_cleared(tiny_model, tmp_path):
    """OUT/stop, what scripts/slurm.sh creates when SLURM's warning reaches the batch script: the run stops at
    the end of the step it is in, with a checkpoint, and removes the file (a stale one at start is removed
    too: it was a request to an earlier incarnation)."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "stop").write_text("")  # stale: removed at start, the run goes on
    cmd = [sys.executable, os.path.join("tests", "parity_train.py"), "--student", tiny_model, *ARGS,
           "--steps", "40", "--out-dir", str(out)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def request_when_running():
        while not os.path.exists(out / "metrics.jsonl"):
            time.sleep(0.2)
        (out / "stop").write_text("")

    threading.Thread(target=request_when_running, daemon=True).start()
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 75, err[-3000:]
    steps = [m["step"] for m in read_metrics(out)]
    assert 1 <= len(steps) < 40 and latest(out) == f"step_{steps[-1]:06d}"
    assert not os.path.exists(out / "stop") and not os.path.exists(out / "lock")


def test_a_second_signal_stops_at_once_and_still_releases_the_lock(tiny_model, tmp_path):
    out = tmp_path / "run"
    res = train(tiny_model, out, signal="rollout:2:SIGINT,rollout:2:SIGINT")  # two, at once
    assert res.returncode == 128 + 2, res.stderr[-3000:]
    assert not os.path.exists(out / "lock") and not os.path.exists(out / "checkpoints")  # none was due


def test_a_signal_to_one_rank_stops_every_rank_at_the_same_point(tiny_model, tmp_path):
    """Two processes: SIGTERM reaches rank 1 only (a scheduler may signal one node first); the ranks agree at
    the next safe point and both stop, after one checkpoint written once."""
    from test_distributed import torchrun

    out = tmp_path / "two"
    res = torchrun(os.path.join("tests", "parity_train.py"),
                   ["--student", tiny_model, *ARGS, "--steps", "3", "--out-dir", str(out)],
                   env={"ACCELERATE_USE_CPU": "true", "ZPPO_SIGNAL": "update:2:SIGTERM",
                        "ZPPO_SIGNAL_RANK": "1"})
    assert res.returncode != 0 and "exitcode  : 75" in res.stderr, res.stderr[-3000:]  # 75 on every rank
    assert latest(out) == "step_000002" and [m["step"] for m in read_metrics(out)] == [1, 2]
    assert not os.path.exists(out / "lock")


def test_an_evaluation_a_crash_cut_short_runs_when_the_run_resumes(tiny_model, tmp_path):
    """SIGKILL inside the final step's evaluation (after its checkpoint): the step's line says eval/pending;
    `--resume` with the same --steps, which said "nothing to do", runs that evaluation and fills the line."""
    out = tmp_path / "run"
    bench = ["--eval-benchmarks", "arithmetic", "--eval-limit", "4", "--eval-max-new-tokens", "4"]
    res = train(tiny_model, out, *bench, signal="eval:2:SIGKILL", steps=2)
    assert res.returncode == -9
    (last,) = read_metrics(out)[-1:]
    assert last["step"] == 2 and last["eval/pending"] == 1 and "eval/arithmetic" not in last
    res = train(tiny_model, out, *bench, "--resume", str(out), steps=2)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = read_metrics(out)
    assert [m["step"] for m in rows] == [1, 2] and "eval/pending" not in rows[-1]
    assert 0 <= rows[-1]["eval/arithmetic"] <= 1
    with open(os.path.join(out, "config.json")) as f:
        assert json.load(f)["steps"] == 2
