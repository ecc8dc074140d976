"""scripts/plot.py on hand-made metrics files: the PNG, its panels, and errors that name the file and line."""
import json
import os

import pytest

from scripts import plot


def write_run(folder, rows, config=None):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "metrics.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    if config is not None:
        with open(os.path.join(folder, "config.json"), "w") as f:
            json.dump(config, f)
    return str(folder)


def step(k, buffer=True, bcq=1):
    row = {"step": k, "acc/plain": 0.1 * k, "acc/bcq": 0.5 if bcq else 0.0, "acc/ncq": 0.0, "count/bcq": bcq,
           "count/ncq": bcq, "adv/positive_frac": 0.2, "time/rollout": 2.0, "time/teacher": 0.0,
           "time/score": 0.1, "time/update": 3.0, "time/step": 5.5, "count/zero_solved": bcq}
    if buffer:
        row.update({"buffer/size": 2 + k, "buffer/admitted_total_at_0/8": 2 * k,
                    "buffer/admitted_total_at_2/8": k, "buffer/graduated_total_from_0/8": k - 1,
                    "buffer/graduated_total_from_2/8": 0})
    if k == 3:
        row["eval/arithmetic"] = 0.4
    return row


@pytest.fixture
def two_runs(tmp_path):
    zppo = write_run(tmp_path / "zppo", [step(k) for k in (1, 2, 3)],
                     {"algo": "zppo", "buffer": True, "bcq": True, "ncq": True, "seed": 0})
    grpo = write_run(tmp_path / "grpo", [step(k, buffer=False, bcq=0) for k in (1, 2, 3)],
                     {"algo": "grpo", "buffer": False, "bcq": False, "ncq": False, "seed": 1})
    return zppo, grpo


def test_two_runs_overlaid_in_one_png(two_runs, tmp_path):
    out = str(tmp_path / "out" / "both.png")
    assert plot.main([*two_runs, "--out", out]) == out
    with open(out, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(out) > 10_000
    runs = [plot.load_run(d) for d in two_runs]
    assert [r["label"] for r in runs] == ["zppo: ZPPO, seed 0", "grpo: GRPO, seed 1"]
    panels = plot.plot_runs(runs, str(tmp_path / "again.png"))
    assert panels == ["plain", "bcq_ncq", "positive_adv", "zero_solved", "buffer", "graduation", "time",
                      "eval"]


def test_panels_without_metrics_are_left_out(tmp_path):
    rows = [{"step": k, "acc/plain": 0.5, "acc/bcq": 0.0, "count/bcq": 0} for k in (1, 2)]
    run = write_run(tmp_path / "r", rows)
    out = plot.main([run])
    assert out == os.path.join(run, "metrics.png") and os.path.getsize(out) > 0
    # BCQ at count 0 is no data
    assert plot.plot_runs([plot.load_run(run)], str(tmp_path / "p.png")) == ["plain"]


def test_graduation_rates_and_phase_times_from_the_last_totals(two_runs):
    rows = plot.load_run(two_runs[0])["rows"]
    assert plot.graduation_by_bin(rows) == {"0/8": (2, 6), "2/8": (0, 3)}
    assert plot.graduation_by_bin(plot.load_run(two_runs[1])["rows"]) == {}
    times = plot.phase_times(rows)
    assert times == pytest.approx({"rollout": 2.0, "score": 0.1, "update": 3.0, "other": 0.4})
    assert plot.series(rows, "acc/bcq", "count/bcq") == ([1, 2, 3], [0.5, 0.5, 0.5])


@pytest.mark.parametrize("config,name", [
    ({"algo": "grpo", "buffer": True}, "GRPO†"), ({"algo": "zppo", "buffer": False}, "GRPO+Both"),
    ({"algo": "zppo", "ncq": False}, "GRPO†+BCQ"), ({"algo": "hint", "buffer": True}, "Hint"),
])
def test_method_names_follow_the_papers_rows(config, name):
    assert plot.method_name(config) == name


def test_bad_line_fails_with_file_and_line(two_runs):
    path = os.path.join(two_runs[0], "metrics.jsonl")
    with open(path, "a") as f:
        f.write('{"step": 4, "acc/plain": 0.\n')
    with pytest.raises(SystemExit, match=rf"plot.py: {path}:4: not valid JSON"):
        plot.main(list(two_runs))
    with open(path, "w") as f:
        f.write(json.dumps(step(1)) + "\n" + json.dumps({"step": 2, "acc/plain": "high"}) + "\n")
    with pytest.raises(SystemExit, match=rf"{path}:2: acc/plain is 'high', not a number"):
        plot.main([two_runs[0]])
    with open(path, "w") as f:
        f.write("[1, 2]\n")
    with pytest.raises(SystemExit, match=rf"{path}:1: expected a JSON object with an integer 'step'"):
        plot.main([two_runs[0]])


def test_missing_folder_or_metrics_is_named(tmp_path):
    with pytest.raises(SystemExit, match=f"{tmp_path / 'nope'}: no such folder"):
        plot.main([str(tmp_path / "nope")])
    os.makedirs(tmp_path / "empty")
    with pytest.raises(SystemExit, match=f"{tmp_path / 'empty' / 'metrics.jsonl'}: not found"):
        plot.main([str(tmp_path / "empty")])


def test_a_half_written_last_line_is_dropped_with_a_warning_and_an_earlier_bad_line_is_an_error(tmp_path):
    """Was: "not valid JSON" for the last half-line of a run killed mid-write (train.py itself drops it)."""
    run = tmp_path / "killed"
    run.mkdir()
    rows = [json.dumps({"step": s, "acc/plain": 0.5}) + "\n" for s in (1, 2)]
    (run / "metrics.jsonl").write_text("".join(rows) + '{"step": 3, "acc/pla')
    with pytest.warns(UserWarning, match=r"metrics.jsonl:3: dropping the half-written last line"):
        assert [r["step"] for r in plot.load_run(str(run))["rows"]] == [1, 2]
    (run / "metrics.jsonl").write_text(rows[0] + '{"step": 2, "acc/pla\n' + rows[1])
    with pytest.raises(plot.MetricsError, match=r"metrics.jsonl:2: not valid JSON"):
        plot.load_run(str(run))
