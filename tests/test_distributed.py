"""Real multi-process training: two CPU processes (gloo) through torch.distributed.run, as
`accelerate launch` does on GPUs."""
import json
import os
import socket
import subprocess
import sys

import torch

from conftest import ROOT
from test_train import ARGS, read_metrics
from zppo import compute_advantages


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_train_in_step_with_global_statistics(tiny_model, tmp_path):
    out = str(tmp_path / "two")
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([ROOT, os.path.join(ROOT, "tests")])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
           os.path.join("tests", "parity_train.py"), "--student", tiny_model, *ARGS,
           "--steps", "2", "--save-every", "1", "--keep-checkpoints", "5", "--out-dir", out,
           "--dump-rollouts"]
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert res.returncode == 0, res.stderr[-3000:]

    metrics = read_metrics(out)  # one log, written once: one line per step
    assert [m["step"] for m in metrics] == [1, 2]
    assert all(m["dist/weight_checksum_spread"] == 0.0 for m in metrics)  # both ranks hold the same weights
    assert sorted(os.listdir(os.path.join(out, "checkpoints"))) == ["step_000001", "step_000002"]

    with open(os.path.join(out, "rollouts.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    for m in metrics:
        step = [r for r in rows if r["step"] == m["step"]]
        # the whole step batch (both ranks' prompts), not one rank's shard
        assert len(step) == 4 * (m["count/questions"] + m["count/bcq"] + m["count/ncq"])
        recomputed = compute_advantages([r["reward"] for r in step], [r["group"] for r in step])
        assert torch.allclose(recomputed, torch.tensor([r["adv"] for r in step]), atol=1e-6)
        assert 0 < m["adv/positive_frac"] < 1
