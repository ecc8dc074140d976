"""Every numeric flag of train.py and eval.py that cannot work stops at start, naming the flag and what it
must be (docs/failure.md): nan, inf and -inf for each float flag, and a value out of range for every numeric
one. Was: `--teacher-timeout inf` was accepted and every teacher request then failed in a timer. The flags
are read from the dataclasses themselves, so a flag added later is tried too."""
from dataclasses import fields

import pytest
from transformers import HfArgumentParser

import config
import eval as ev

# a value each flag's range refuses (the others: ints that are counts, >= 1 or >= 0)
OUT_OF_RANGE = {"tau": "0", "rho_replay": "1.5", "rho_aug": "-0.5", "clip_low": "1", "clip_high": "-1",
                "dual_clip": "1", "temperature": "0", "top_p": "0", "compress_temperature": "-1", "lr": "0",
                "weight_decay": "-1", "grad_clip": "0", "teacher_timeout": "0", "sync_warn": "-1",
                "vllm_gpu_memory_utilization": "1.5", "teacher_gpu_memory_utilization": "0",
                "prefix_frac": "0", "jsd_beta": "1", "group_size": "1", "top_k": "-1", "seed": None,
                "max_model_len": "10", "image_max_pixels": "1", "teacher_retries": "-1", "save_every": "-1",
                "keep_checkpoints": "-1", "max_nonfinite_steps": "-1", "eval_every": "-1"}
NUMERIC = [f for f in fields(config.Config) if f.type in (int, float, int | None, float | None)]


def refused(argv):
    """The message train.py stops with for `argv`, before anything loads (None when it would go on)."""
    try:
        cfg = config.parse_config(argv)
        problems = config.value_problems(cfg)
    except (ValueError, SystemExit) as e:  # check_algo's ValueError, argparse's exit
        return str(e)
    return "\n".join(problems) or None


@pytest.mark.parametrize("name", [f.name for f in NUMERIC if f.type in (float, float | None)])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_every_float_flag_of_train_refuses_nan_and_infinities(name, value):
    flag = f"--{name.replace('_', '-')}"
    message = refused([f"{flag}={value}"])
    assert message and (name in message.replace("-", "_") or "jsd" in message or "prefix" in message), \
        (flag, value, message)


@pytest.mark.parametrize("name", [f.name for f in NUMERIC])
def test_every_numeric_flag_of_train_refuses_a_value_out_of_its_range(name):
    value = OUT_OF_RANGE.get(name, "0" if name not in ("data_limit", "eval_limit", "candidate_max_chars")
                             else "-1")
    if value is None:  # any seed works
        return
    flag = f"--{name.replace('_', '-')}"
    message = refused([f"{flag}={value}"] + (["--algo", "prefix", "--teacher", "gold"]
                                              if name == "prefix_frac" else []))
    assert message and (flag in message or name.split("_")[0] in message), (flag, value, message)


def test_every_numeric_flag_reaches_validate_before_any_model_loads(tmp_path):
    """The real entry point: train.main stops (SystemExit naming the flag) with the student never loaded."""
    import train

    with pytest.raises(SystemExit, match=r"--teacher-timeout inf: must be a finite number"):
        train.main(config.parse_config(["--student", str(tmp_path / "never_loaded"), "--teacher", "T",
                                        "--teacher-url", "http://127.0.0.1:9", "--teacher-timeout", "inf",
                                        "--out-dir", str(tmp_path / "o")]))


EVAL_NUMERIC = [f for f in fields(ev.EvalConfig) if f.type in (int, float, int | None, float | None)]
EVAL_OUT_OF_RANGE = {"judge_retries": "-1", "vllm_gpu_memory_utilization": "2", "image_max_pixels": "1",
                     "video_max_frames": "1", "seed": None}


@pytest.mark.parametrize("name", [f.name for f in EVAL_NUMERIC])
def test_every_numeric_flag_of_eval_is_checked(name):
    flag = f"--{name.replace('_', '-')}"
    kind = next(f.type for f in EVAL_NUMERIC if f.name == name)
    values = (["nan", "inf"] if kind in (float, float | None) else []) + \
        [v for v in [EVAL_OUT_OF_RANGE.get(name, "0")] if v is not None]
    for value in values:
        cfg = HfArgumentParser(ev.EvalConfig).parse_args_into_dataclasses(
            ["--model", "m", "--benchmarks", "arithmetic", f"{flag}={value}"])[0]
        with pytest.raises(SystemExit, match=rf"{flag} {value}|{flag} .*{value}"):
            ev.check(cfg)
