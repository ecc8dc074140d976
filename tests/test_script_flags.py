"""The scripts' numeric flags: a value that cannot work (negative, zero where one is needed, nan, inf, a
fraction for a count, a share over 1) stops the script at start, before any work, with a message naming the
flag, the value and the allowed range. In process for every flag; as a real process for one each, checking
that nothing was written."""
import os
import subprocess
import sys

import pytest

from conftest import ROOT
from scripts import bench_gpu, bench_rollout, build_data, compare

BUILD = ["--out", "/nonexistent/never"]
CASES = [  # (script, argv before the flag, flag, value, what the message says is allowed)
    *[(build_data.parse_args, BUILD, flag, value, "an integer >= 1")
      for flag in ("--cap1", "--cap2", "--max-answer-chars", "--min-image-side", "--max-prompt-tokens",
                   "--image-min-pixels", "--image-max-pixels") for value in ("0", "-5", "2.5", "nan", "inf")],
    *[(build_data.parse_args, BUILD, "--max-pass-rate", value, "a finite number in [0, 1]")
      for value in ("nan", "inf", "-0.1", "1.5", "half")],
    *[(build_data.parse_args, BUILD, "--seed", value, "an integer") for value in ("nan", "inf", "0.5")],
    *[(compare.parse_args, [], "--eval-temperature", value, "a finite number >= 0")
      for value in ("nan", "inf", "-1")],
    *[(bench_rollout.parse_args, [], flag, value, "an integer >= 1")
      for flag in ("--prompts", "--n", "--max-new-tokens", "--batch-size") for value in ("0", "-1", "nan")],
    *[(bench_rollout.parse_args, [], "--vllm-gpu-memory-utilization", value, "a finite number in (0, 1]")
      for value in ("0", "1.5", "nan", "inf")],
    *[(bench_gpu.parse_args, [], "--stage-timeout", value, "an integer >= 1") for value in ("0", "nan")],
    *[(bench_gpu.parse_args, [], "--budget-s", value, "a finite number > 0")
      for value in ("0", "-1", "nan", "inf")],
    *[(bench_gpu.parse_args, [], "--total-s", value, "a number > 0 (inf allowed)") for value in ("0", "nan")],
]


@pytest.mark.parametrize("parse,before,flag,value,allowed", CASES,
                         ids=[f"{c[0].__module__.split('.')[-1]}{c[2]}={c[3]}" for c in CASES])
def test_a_numeric_flag_that_cannot_work_stops_naming_it_its_value_and_range(parse, before, flag, value,
                                                                             allowed, capsys):
    with pytest.raises(SystemExit) as e:
        parse([*before, flag, value])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"{flag}" in err and value in err and allowed in err, err


@pytest.mark.parametrize("flag", ["--micro", "--lengths"])
@pytest.mark.parametrize("value,bad", [("1,0,8", "'0'"), ("4,x", "'x'"), ("-2", "'-2'"), ("4,nan", "'nan'")])
def test_a_list_of_counts_names_the_item_that_cannot_work(flag, value, bad, capsys):
    with pytest.raises(SystemExit):
        bench_gpu.parse_args([flag, value])
    assert f"argument {flag}: {bad} is not allowed: expected an integer >= 1" in capsys.readouterr().err


def test_values_in_range_pass_and_lists_are_parsed():
    args = build_data.parse_args([*BUILD, "--cap1", "1", "--max-pass-rate", "1", "--seed", "-3"])
    assert (args.cap1, args.max_pass_rate, args.seed) == (1, 1.0, -3)
    args = bench_gpu.parse_args(["--micro", "2,4", "--lengths", "64", "--total-s", "inf"])
    assert (args.micro, args.lengths, args.total_s) == ([2, 4], [64], float("inf"))
    assert bench_rollout.parse_args(["--vllm-gpu-memory-utilization", "1"]).vllm_gpu_memory_utilization == 1.0
    assert compare.parse_args(["--eval-temperature", "0"]).eval_temperature == 0.0
    with pytest.raises(SystemExit):  # the pixel bounds in the wrong order
        build_data.parse_args([*BUILD, "--image-min-pixels", "4096", "--image-max-pixels", "1024"])


@pytest.mark.parametrize("script,argv,made", [
    ("build_data.py", ["--vero", "v.jsonl", "--mmfr", "m.jsonl", "--cap1", "-5"], "out"),
    ("bench_gpu.py", ["--tiny", "--cpu", "--skip-smoke", "--budget-s", "nan"], "work"),
    ("bench_rollout.py", ["--engines", "transformers", "--dtypes", "float32", "--n", "0"], None),
])
def test_a_script_stops_before_any_work(tmp_path, script, argv, made):
    folder = str(tmp_path / "made")
    extra = {"out": ["--out", folder], "work": ["--work", folder], None: ["--model", folder]}[made]
    res = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", script), *extra, *argv], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "is not allowed: expected" in res.stderr and not res.stdout, res.stdout + res.stderr
    assert not os.path.exists(folder)
