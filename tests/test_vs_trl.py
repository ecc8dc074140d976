"""scripts/vs_trl.py, the side-by-side with TRL: its zppo side end to end on the tiny model (TRL is an
optional install the suite does not have: its side runs only where TRL is, and without it the script says
what to install), the table it prints, and a rerun that keeps a finished side instead of running it again."""
import json
import os
import subprocess
import sys

from conftest import ROOT

SCRIPT = os.path.join(ROOT, "scripts", "vs_trl.py")


def run(*args, env=None):
    return subprocess.run([sys.executable, SCRIPT, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, check=False, env={**os.environ, **(env or {})})


def test_the_zppo_side_runs_its_steps_reports_and_is_kept(tiny_model, tmp_path):
    data = tmp_path / "gsm8k.jsonl"
    data.write_text("".join(json.dumps({"question": f"Tom has {i} apples and buys 2. How many now?",
                                        "answer": f"{i} + 2 = {i + 2}\n#### {i + 2}"}) + "\n"
                            for i in range(6)))
    out = tmp_path / "vs"
    flags = ["--model", tiny_model, "--data", str(data), "--out", str(out), "--questions", "2",
             "--group-size", "2", "--max-new-tokens", "4", "--micro-batch-size", "2", "--steps", "2",
             "--sides", "zppo", "--no-bf16"]
    first = run(*flags)
    assert first.returncode == 0, first.stderr[-3000:]
    with open(out / "zppo.json") as f:
        result = json.load(f)
    assert len(result["step_s"]) == len(result["rollout_s"]) == len(result["rollout_tokens"]) == 2
    assert all(s > 0 for s in result["step_s"]) and result["peak_gib"] > 0.1
    assert result["settings"]["old_logprobs"] == "needed" and result["settings"]["questions"] == 2
    assert "vs_trl.py: zppo ..." in first.stdout and "| zppo |" in first.stdout
    with open(out / "questions.jsonl") as f:  # the steps' questions, each once, GSM8K's answer split
        assert [json.loads(line)["answer"] for line in f] == ["2", "3", "4", "5"]

    again = run(*flags)  # the same settings: the result is kept, nothing runs
    assert again.returncode == 0 and "vs_trl.py: zppo ..." not in again.stdout and "| zppo |" in again.stdout
    changed = run(*flags[:-1], "--old-logprobs", "all", "--no-bf16")  # another setting: run again
    assert changed.returncode == 0 and "vs_trl.py: zppo ..." in changed.stdout
    forced = run(*flags, "--no-share-prompts", "--again")  # run anew on request, then the table
    assert forced.returncode == 0, forced.stderr[-3000:]
    assert "vs_trl.py: zppo ..." in forced.stdout and "| zppo |" in forced.stdout
    with open(out / "zppo.json") as f:
        assert json.load(f)["settings"]["share_prompts"] is False


def test_without_trl_its_side_says_what_to_install(tiny_model, tmp_path):
    hidden = tmp_path / "no_trl"  # a `trl` that cannot be imported, first on the path, even where TRL is
    hidden.mkdir()
    (hidden / "trl.py").write_text("raise ImportError('No module named trl')\n")
    data = tmp_path / "q.jsonl"
    data.write_text("".join(json.dumps({"question": "1 + 1?", "answer": "2"}) + "\n" for _ in range(4)))
    res = run("--model", tiny_model, "--data", str(data), "--out", str(tmp_path / "vs"), "--sides", "trl",
              "--questions", "2", "--group-size", "2", "--micro-batch-size", "2", "--steps", "2", "--no-bf16",
              env={"PYTHONPATH": str(hidden)})
    assert res.returncode == 1
    assert "TRL is not installed" in res.stderr and "pip install trl" in res.stderr
    assert "the trl side failed" in res.stderr
