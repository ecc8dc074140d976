"""A fixed-seed 3-step ZPPO run on the tiny random Qwen3.5 must keep writing the same metrics and weights.

The reference (tests/data/golden_3steps.json) was written by this file before a refactor; any change to
the loop that is meant to keep behaviour must keep these numbers. A change that is meant to alter
them regenerates the file on purpose, and says so in its commit:
    python tests/test_golden.py --write
"""
import json
import os
import sys

import pytest
from safetensors.torch import load_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

GOLDEN = os.path.join(HERE, "data", "golden_3steps.json")
ARGS = ["--teacher", "gold", "--data", "arithmetic", "--data-limit", "40", "--questions-per-step", "8",
        "--group-size", "4", "--max-new-tokens", "12", "--iters-per-step", "2", "--lr", "1e-3",
        "--micro-batch-size", "4", "--steps", "3", "--seed", "7"]


def run(model_dir, out_dir):
    """3 steps with the parity reward (mixed groups, so the update moves the weights); returns what is
    compared."""
    import reward
    import train
    from device import MEASURED
    from test_train import parity_grade

    saved = reward.grade
    reward.grade = parity_grade
    try:
        train.main(train.parse_config(["--student", model_dir, *ARGS, "--out-dir", out_dir]))
    finally:
        reward.grade = saved
    with open(os.path.join(out_dir, "metrics.jsonl")) as f:
        metrics = [{k: v for k, v in json.loads(line).items() if not k.startswith(MEASURED)} for line in f]
    weights = load_file(os.path.join(out_dir, "checkpoints", "step_000003", "model.safetensors"))
    sums = {k: [w.double().sum().item(), w.double().square().sum().item()]
            for k, w in sorted(weights.items())}
    return {"metrics": metrics, "weight_sums": sums}


def test_three_fixed_seed_steps_write_the_reference_metrics_and_weights(tiny_model, tmp_path):
    got = run(tiny_model, str(tmp_path / "golden"))
    with open(GOLDEN) as f:
        want = json.load(f)
    assert [m["step"] for m in got["metrics"]] == [1, 2, 3]
    for a, b in zip(got["metrics"], want["metrics"]):
        assert set(b) <= set(a)  # new metrics may be added; none may disappear
        for key in b:
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-5), (a["step"], key)
    assert sorted(got["weight_sums"]) == sorted(want["weight_sums"])
    for name, (s, sq) in want["weight_sums"].items():
        assert got["weight_sums"][name] == pytest.approx([s, sq], rel=1e-5, abs=1e-5), name


if __name__ == "__main__" and "--write" in sys.argv:
    import tempfile

    from conftest import build_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        reference = run(build_tiny_model(os.path.join(tmp, "model")), os.path.join(tmp, "run"))
    with open(GOLDEN, "w") as f:
        json.dump(reference, f, indent=1)
    print(f"wrote {GOLDEN}")
