"""scripts/compare.py: --help, the smoke study end to end (results.json, PNGs), skipping finished runs,
resuming."""
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT
from data import load_examples
from reward import grade
from scripts import compare
from scripts.tiers import TIERS, make_tiered


def test_help_lists_the_flags_and_the_measured_size():
    res = subprocess.run([sys.executable, "scripts/compare.py", "--help"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    for flag in ("--smoke", "--seeds", "--steps", "--eval-every", "--methods", "--eval-samples"):
        assert flag in res.stdout
    assert "1.7 hours" in res.stdout and "measured on 2 cores" in res.stdout


def test_bad_flags_stop_before_anything_runs(tmp_path, capsys):
    with pytest.raises(SystemExit):
        compare.main(["--methods", "zppo,nope", "--seeds", "0", "--out-dir", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert "unknown 'nope'" in err and "--seeds 0: must be >= 1" in err
    assert not os.path.exists(tmp_path / "x")


def test_interval_is_a_t_interval_over_seeds():
    assert compare.interval([0.5]) == (0.5, None, None)
    mean, _low, high = compare.interval([0.4, 0.5, 0.6])
    assert mean == pytest.approx(0.5) and high - mean == pytest.approx(4.303 * 0.1 / 3 ** 0.5)


def test_tiered_task_has_four_tiers_gold_solutions_and_a_fixed_split(tmp_path):
    train, test = make_tiered(seed=1), make_tiered(seed=1, split="test")
    assert len(train) == 4 * 160 and len(test) == 4 * 40
    for split in (train, test):
        assert sorted({e["tier"] for e in split}) == sorted(TIERS)
        assert all(sum(e["tier"] == t for e in split) == len(split) // 4 for t in TIERS)
    ids = [e["id"] for e in train + test]
    assert len(set(ids)) == len(ids) and len({e["question"] for e in train + test}) == len(ids)
    assert all(e["id"].startswith(f"tiers:{e['tier']}:") for e in train + test)
    assert all(grade(e["solution"], e["answer"]) == 1.0
               and e["solution"].endswith(f"\\boxed{{{e['answer']}}}.") for e in train + test)
    assert all(int(e["answer"]) >= 0 for e in train + test)
    # the split does not depend on the seed, which only orders the questions
    assert {e["id"] for e in make_tiered(seed=7, split="test")} == {e["id"] for e in test}
    assert make_tiered(seed=7) != train and sorted(ids[:640]) == sorted(e["id"] for e in make_tiered(seed=7))
    assert make_tiered(5, seed=1) == train[:5]
    # the study hands its task to train.py as a JSONL file (OUT/data/train.jsonl)
    path = tmp_path / "tiers.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in test[:3]))
    assert load_examples(str(path)) == [{k: e[k] for k in ("id", "question", "answer", "solution")}
                                        for e in test[:3]]
    word = next(e for e in train if e["tier"] == "word")
    assert "?" in word["question"] and word["solution"].count("=") == 2  # two steps, each worked


def metrics_steps(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line)["step"] for line in f]


def test_smoke_study_end_to_end_then_skipped(tmp_path, capsys):
    out = str(tmp_path / "study")
    results = compare.main(["--smoke", "--out-dir", out])
    assert set(results["methods"]) == {"zppo", "grpo_buffer", "grpo"}
    for method, entry in results["methods"].items():
        run = entry["runs"]["0"]
        assert [r["step"] for r in run["heldout"]] == [0, 1, 2]
        assert [c["step"] for c in entry["heldout_greedy"]] == [0, 1, 2]
        assert all(0 <= c["mean"] <= 1 and c["seeds"] == 1 and c["low"] is None
                   for c in entry["heldout_sampled"])
        assert metrics_steps(run["dir"]) == [1, 2]  # the second segment resumed the first
        assert run["time"]["update"] > 0 and run["time"]["rollout"] > 0
        # GRPO has no buffer; ZPPO and GRPO† admit every question of a random model (0/4 each step)
        assert bool(entry["graduation"]) == (method != "grpo")
    assert results["methods"]["zppo"]["graduation"]["0/4"]["admitted"] == 8
    # a random model: every plain group at 0/4; only ZPPO asks them again (cap round(0.25 * 4) = 1: one BCQ
    # a step)
    zppo, grpo = results["methods"]["zppo"]["mechanism"], results["methods"]["grpo"]["mechanism"]
    assert zppo["plain_zero"] == zppo["plain_groups"] == 4 + 4 + 1  # step 2 replays round(0.25 * 4) = 1
    assert grpo["plain_zero"] == grpo["plain_groups"] == 8
    assert zppo["zero_reformulated"] == zppo["bcq_zero"] == 2 and zppo["bcq_zero_rollouts"] == 2 * 4
    assert grpo["zero_reformulated"] == grpo["zero_solved"] == grpo["bcq_zero_rollouts"] == 0
    assert results["probe"]["questions"] == 4 and sum(results["probe"]["histogram"].values()) == 4
    # the pre-registered measures: the share of the 0/G admissions that graduated (none here: a random model),
    # over seeds; GRPO has no buffer, so no admission; the last held-out greedy score of each tier
    zero = results["methods"]["zppo"]["graduation_zero"]
    assert zero == {"mean": 0.0, "low": None, "high": None, "seeds": 1}
    assert results["methods"]["grpo"]["graduation_zero"]["seeds"] == 0
    tiers = results["methods"]["zppo"]["heldout_greedy_by_tier_last"]
    assert tiers and set(tiers) <= {"sum2", "sum3", "product", "word"}
    assert all(0 <= t["mean"] <= 1 and t["seeds"] == 1 for t in tiers.values())
    # the registered contrasts, paired by seed: ZPPO - GRPO† on the graduation share (0 - 0 here), ZPPO - GRPO
    # on the held-out score (GRPO has no buffer: no graduation difference); pairs of absent methods left out
    assert set(results["contrasts"]) == {"zppo-grpo_buffer", "zppo-grpo"}
    primary = results["contrasts"]["zppo-grpo_buffer"]
    assert primary["graduation_zero"] == {"mean": 0.0, "low": None, "high": None, "seeds": 1}
    assert "graduation_zero" not in results["contrasts"]["zppo-grpo"]
    runs = {m: results["methods"][m]["runs"]["0"]["heldout"][-1] for m in ("zppo", "grpo")}
    assert results["contrasts"]["zppo-grpo"]["heldout_greedy_last"]["mean"] == pytest.approx(
        runs["zppo"]["greedy"] - runs["grpo"]["greedy"])
    assert set(primary["heldout_greedy_by_tier_last"]) == set(tiers)
    with open(os.path.join(out, "results.json")) as f:
        assert json.load(f)["methods"]["grpo"]["name"] == "GRPO"
    with open(os.path.join(out, "results.md")) as f:
        table = f.read()
    assert "| ZPPO | " in table and "| GRPO | 8 | 8 | 0 | 0 | - |" in table and "| 0 / 8 (0%) |" in table
    assert "| GRPO | none admitted |" in table and "| ZPPO | 0.000 |" in table
    assert "| ZPPO - GRPO† | +0.000 |" in table and "| ZPPO - GRPO | - |" in table
    # per seed: ZPPO admitted all 8 plain questions at 0/4 and replayed 1 of them (1 / 8 replays each)
    assert "| ZPPO | 0 | 8 | 0 | 0.12 | " in table and "| GRPO | 0 | - | - | - | " in table
    for name in ("heldout.png", "training.png", "graduation.png", "time.png", "tiers.png", "mechanism.png"):
        with open(os.path.join(out, name), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n", name
        assert os.path.getsize(os.path.join(out, name)) > 5_000
    # run again: every run is complete and skipped; nothing is trained or scored again
    stamps = {m: os.path.getmtime(os.path.join(e["runs"]["0"]["dir"], "metrics.jsonl"))
              for m, e in results["methods"].items()}
    capsys.readouterr()
    again = compare.main(["--smoke", "--out-dir", out])
    assert capsys.readouterr().out.count("complete, skipped") == 3
    assert {m: os.path.getmtime(os.path.join(e["runs"]["0"]["dir"], "metrics.jsonl"))
            for m, e in again["methods"].items()} == stamps
    assert again["methods"]["zppo"]["heldout_greedy"] == results["methods"]["zppo"]["heldout_greedy"]
    # a rerun with other shared settings is refused, naming them
    with pytest.raises(SystemExit, match="eval_samples 2 -> 3"):
        compare.main(["--smoke", "--out-dir", out, "--eval-samples", "3"])


@pytest.mark.slow
def test_smoke_study_resumes_a_run_stopped_midway(tmp_path, monkeypatch, capsys):
    """The study stops while training a run's second segment; the rerun resumes that run from its step-1
    checkpoint (train.py --resume) and scores step 2, and runs the others from the start."""
    import train

    real_main, calls = train.main, []

    def interrupted(cfg):
        calls.append(cfg.resume)
        if cfg.resume:
            raise KeyboardInterrupt
        return real_main(cfg)

    out = str(tmp_path / "study")
    monkeypatch.setattr(train, "main", interrupted)
    with pytest.raises(KeyboardInterrupt):
        compare.main(["--smoke", "--out-dir", out])
    assert calls == [None, os.path.join(out, "runs", "zppo_seed0")]
    monkeypatch.setattr(train, "main", real_main)
    capsys.readouterr()
    results = compare.main(["--smoke", "--out-dir", out])
    log = capsys.readouterr().out
    assert "zppo seed 0: resumed at step 1, done" in log and "grpo seed 0: done" in log
    run = results["methods"]["zppo"]["runs"]["0"]
    assert [r["step"] for r in run["heldout"]] == [0, 1, 2] and metrics_steps(run["dir"]) == [1, 2]


def test_runs_use_the_demos_rl_settings(tiny_model):
    """compare.py trains with demo.py's flags, so the demo's measured step times size the study."""
    import demo
    import train

    cfg = train.parse_config(["--student", tiny_model, "--teacher", "gold", *demo.TRAIN_FLAGS,
                              *compare.METHODS["grpo_buffer"][1]])
    assert (cfg.questions_per_step, cfg.group_size, cfg.max_new_tokens, cfg.iters_per_step) == (8, 8, 32, 2)
    assert cfg.lr == 1e-5
    assert cfg.gradient_checkpointing  # memory: see TRAIN_FLAGS
    for bf16, precision in ((True, "bf16"), (False, "no")):
        assert train.parse_config(["--student", tiny_model,
                                   *demo.precision_flags(bf16)]).mixed_precision == precision
    assert cfg.algo == "grpo" and cfg.buffer and not cfg.bcq and not cfg.ncq
    both = train.parse_config(["--student", tiny_model, *compare.METHODS["grpo_both"][1]])
    assert not both.buffer and both.bcq and both.ncq


def test_a_flag_typo_stops_before_the_study_is_recorded(tmp_path, capsys):
    """Was: `--eval-limt 5` went on to train.py, which failed; the typo was already in study.json, and the
    rerun without it was refused ("holds a study with other settings")."""
    with pytest.raises(SystemExit):
        compare.main(["--smoke", "--out-dir", str(tmp_path / "s"), "--eval-limt", "5"])
    assert "unknown flags --eval-limt 5 (neither compare.py's nor train.py's)" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "s" / "study.json")
    # train.py's own: kept
    assert compare.parse_args(["--smoke", "--lr", "1e-4"]).train_extra == ["--lr", "1e-4"]


def test_checkpoints_between_scored_steps(tmp_path, monkeypatch, tiny_model):
    """--checkpoint-every stops a run for a checkpoint between the scored steps (what a stopped study loses at
    most), and only multiples of --eval-every and the last step are scored. train.main and the scoring are
    replaced by recorders here: the segments' real training and resuming are the smoke tests' part."""
    import train

    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(e) + "\n" for e in make_tiered(8)))
    args = compare.parse_args(["--out-dir", str(tmp_path / "s"), "--steps", "12", "--eval-every", "6",
                               "--checkpoint-every", "4", "--eval-samples", "0", "--fp32"])
    segments, scored = [], []
    def record(cfg):  # as train.main would, the run's folder exists after its first segment
        segments.append((cfg.steps, bool(cfg.resume)))
        os.makedirs(cfg.out_dir if not cfg.resume else cfg.resume, exist_ok=True)

    monkeypatch.setattr(train, "main", record)
    monkeypatch.setattr(compare, "score", lambda ckpt, test, a, step: scored.append(step) or {
        "step": step, "greedy": 0.5, "sampled": None})
    assert compare.run_one(args, "grpo", 0, tiny_model, str(data), [], {"model": "tiny"},
                           {"step": 0, "greedy": 0.25}) == "done"
    assert segments == [(4, False), (6, True), (8, True), (12, True)] and scored == [6, 12]
    assert compare.parse_args(["--eval-every", "3"]).checkpoint_every == 3  # default: --eval-every
    with pytest.raises(SystemExit):
        compare.parse_args(["--checkpoint-every", "0"])


def test_greedy_only_scoring_end_to_end(tmp_path):
    """--eval-samples 0: each checkpoint is scored greedily only (half the time); the tables and plots leave
    the sampled score out."""
    out = str(tmp_path / "study")
    results = compare.main(["--smoke", "--out-dir", out, "--methods", "grpo", "--eval-samples", "0"])
    entry = results["methods"]["grpo"]
    assert "heldout_sampled" not in entry and [c["step"] for c in entry["heldout_greedy"]] == [0, 1, 2]
    assert all(r["sampled"] is None for r in entry["runs"]["0"]["heldout"])
    with open(os.path.join(out, "results.md")) as f:
        table = f.read()
    assert "sampled" not in table and "| GRPO | " in table
    assert os.path.getsize(os.path.join(out, "heldout.png")) > 5_000


def test_report_reads_the_finished_runs_and_trains_nothing(tmp_path, capsys):
    """--report writes the results of the runs at --steps from the study's files; a run short of it (here
    GRPO's, its last score removed) is left out, with its method; nothing is trained or scored."""
    out = str(tmp_path / "study")
    full = compare.main(["--smoke", "--out-dir", out])
    grpo_scores = os.path.join(full["methods"]["grpo"]["runs"]["0"]["dir"], "heldout.jsonl")
    with open(grpo_scores) as f:
        first = f.readline() + f.readline()
    with open(grpo_scores, "w") as f:
        f.write(first)  # steps 0 and 1 only: as if the run were still training
    stamps = {p: os.path.getmtime(p) for p in (grpo_scores, os.path.join(out, "heldout_step0.json"))}
    capsys.readouterr()
    partial = compare.main(["--smoke", "--out-dir", out, "--report"])
    assert "zppo seeds [0], grpo_buffer seeds [0] finished" in capsys.readouterr().out
    assert set(partial["methods"]) == {"zppo", "grpo_buffer"}
    assert set(partial["contrasts"]) == {"zppo-grpo_buffer"}
    assert partial["methods"]["zppo"]["heldout_greedy"] == full["methods"]["zppo"]["heldout_greedy"]
    assert partial["methods"]["zppo"]["graduation"] == full["methods"]["zppo"]["graduation"]
    assert {p: os.path.getmtime(p) for p in stamps} == stamps
    with open(os.path.join(out, "results.md")) as f:
        assert "| GRPO |" not in f.read()
    with pytest.raises(SystemExit, match="holds no study"):
        compare.main(["--smoke", "--out-dir", str(tmp_path / "none"), "--report"])


def test_a_seed_is_paired_only_with_runs_of_the_same_student(tmp_path, capsys):
    """Each run's heldout.jsonl starts with its student (student.json's record, the CPU that built it) and
    that student's step-0 score. A study continued on another machine rebuilds the primer, which there gives
    another student (bf16 kernels differ between CPUs): a new run of a seed whose other runs trained another
    student is refused, naming both; the results take each run's step 0 from its own first row."""
    out = str(tmp_path / "study")
    first = compare.main(["--smoke", "--out-dir", out, "--methods", "grpo", "--eval-samples", "0"])
    with open(os.path.join(out, "student.json")) as f:
        student = json.load(f)
    assert student["cpu"] == compare.cpu_name() and student["cpu"]
    path = os.path.join(first["methods"]["grpo"]["runs"]["0"]["dir"], "heldout.jsonl")
    with open(path) as f:
        rows = [json.loads(line) for line in f]
    assert [r["step"] for r in rows] == [0, 1, 2] and rows[0]["student"] == student
    assert first["methods"]["grpo"]["runs"]["0"]["student"] == student
    # as if the GRPO run had trained on another machine's student, which scored 0.75 before RL
    rows[0] = {**rows[0], "greedy": 0.75, "student": {**student, "cpu": "another CPU"}}
    with open(path, "w") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(SystemExit, match=r"grpo seed 0 trained another student .* on another CPU; this one: "
                                         r".*grpo_buffer seed 0 would not be paired"):
        compare.main(["--smoke", "--out-dir", out, "--methods", "grpo,grpo_buffer", "--eval-samples", "0"])
    assert not os.path.exists(os.path.join(out, "runs", "grpo_buffer_seed0"))  # refused before training
    again = compare.main(["--smoke", "--out-dir", out, "--methods", "grpo", "--eval-samples", "0",
                          "--report"])
    run = again["methods"]["grpo"]["runs"]["0"]
    assert run["heldout"][0]["greedy"] == 0.75 and run["student"]["cpu"] == "another CPU"
    assert "student" not in run["heldout"][0]
    assert again["methods"]["grpo"]["heldout_greedy"][0]["mean"] == 0.75
    with open(os.path.join(out, "results.md")) as f:
        assert "| 0.750 -> " in f.read()
    # the same student (its record as this machine wrote it): the seed's next method trains
    rows[0]["student"] = student
    with open(path, "w") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows))
    both = compare.main(["--smoke", "--out-dir", out, "--methods", "grpo,grpo_buffer", "--eval-samples", "0"])
    assert both["methods"]["grpo_buffer"]["runs"]["0"]["student"] == student
