"""A resume's record says what continues (docs/failure.md): every flag the resume does not give keeps the
run's value; one it gives changes the run from that step on, in config.json, the later checkpoints and
OUT/resumes.jsonl; a flag the continuing weights or data position cannot follow stops the resume."""
import json
import os

import pytest

import train
from test_train import ARGS


def config_of(path):
    with open(path) as f:
        return json.load(f)


def test_a_resume_records_what_continues(tiny_model, tiny_dense, tmp_path):
    out = str(tmp_path / "run")
    train.main(train.parse_config(["--student", tiny_model, *ARGS, "--steps", "1", "--out-dir", out,
                                   "--save-every", "1", "--keep-checkpoints", "0"]))
    before = config_of(os.path.join(out, "config.json"))

    # another student (or data, seed, ...) with the same weights: was a warning, then config.json said the
    # other student trained
    for flag, value in (("--student", tiny_dense), ("--seed", "5"), ("--data-limit", "30")):
        with pytest.raises(SystemExit, match=rf"cannot resume: {flag} .*: the run continues .*step_000001, "
                                             r"trained with"):
            train.main(train.parse_config(["--steps", "2", "--resume", out, flag, value]))
    assert config_of(os.path.join(out, "config.json")) == before  # nothing rewritten

    # only --steps given: every other flag is the run's (was: the defaults, lr 1e-6 among them, recorded)
    train.main(train.parse_config(["--steps", "2", "--resume", out]))
    after = config_of(os.path.join(out, "config.json"))
    assert {k: v for k, v in after.items() if k not in ("steps", "resume")} == \
        {k: v for k, v in before.items() if k not in ("steps", "resume")}
    assert not os.path.exists(os.path.join(out, "resumes.jsonl"))

    # a flag given with another value: applied, and recorded with the step it changed at
    with pytest.warns(UserWarning, match=r"flags differ .*: lr 0.001 -> 0.0002$"):
        train.main(train.parse_config(["--steps", "3", "--resume", out, "--lr", "2e-4"]))
    with open(os.path.join(out, "resumes.jsonl")) as f:
        assert [json.loads(line) for line in f] == [{"step": 2, "changes": {"lr": [0.001, 0.0002]}}]
    state = lambda n: config_of(os.path.join(out, "checkpoints", f"step_{n:06d}", "state.json"))["config"]
    assert (state(2)["lr"], state(3)["lr"], config_of(os.path.join(out, "config.json"))["lr"]) == \
        (0.001, 0.0002, 0.0002)
