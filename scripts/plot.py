"""Curves of train.py runs, read from their metrics.jsonl: one PNG, several runs overlaid.

    python scripts/plot.py runs/demo/zppo                 # -> runs/demo/zppo/metrics.png
    python scripts/plot.py runs/demo/zppo runs/demo/grpo --out demo.png

Panels (a panel whose metrics no run logged is left out): plain accuracy; BCQ and NCQ accuracy (only
the steps that had such prompts: with none, train.py logs 0); the fraction of rollouts with a positive
advantage; the replay buffer's size; the cumulative graduation rate by admission bin at each run's last
step (graduated_total_from_k/n / admitted_total_at_k/n, the paper's Fig. 4, each bar labelled
graduated/admitted); the mean seconds per step by phase (stacked); and every eval/NAME metric. A run is
labelled from its config.json (method, seed) and its folder's name.
"""
import argparse
import json
import math
import os
import re
import statistics
import sys
import warnings

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

# run as python scripts/plot.py
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from data import read_jsonl

PHASES = ("rollout", "teacher", "compress", "score", "update", "sync")
_ADMITTED = re.compile(r"buffer/admitted_total_at_(\d+)/(\d+)")


class MetricsError(ValueError):
    """A run folder or metrics file that cannot be plotted; the message names the file (and line)."""


def method_name(config):
    """The paper's name for a run's flags (docs/training.md's table): ZPPO, GRPO, GRPO†, GRPO+Both, ..."""
    algo, buffer = config.get("algo", "zppo"), config.get("buffer", True)
    if algo == "zppo":
        bcq, ncq = config.get("bcq", True), config.get("ncq", True)
        if bcq and ncq:
            return "ZPPO" if buffer else "GRPO+Both"
        if bcq or ncq:
            return ("GRPO†+" if buffer else "GRPO+") + ("BCQ" if bcq else "NCQ")
        return "GRPO†" if buffer else "GRPO"
    name = {"grpo": "GRPO", "hint": "Hint", "prefix": "Prefix", "off_distill": "Off-Distill",
            "on_distill": "On-Distill"}.get(algo, algo)
    return name + ("†" if buffer and algo in ("grpo", "off_distill", "on_distill") else "")


def load_run(run_dir):
    """{dir, label, config, rows} of a run folder; rows are metrics.jsonl's lines in order. A missing folder
    or file, or a line that is not a JSON object with a step and numeric values, raises MetricsError naming
    it."""
    if not os.path.isdir(run_dir):
        raise MetricsError(f"{run_dir}: no such folder")
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        raise MetricsError(f"{path}: not found ({run_dir} is not a train.py run folder, "
                           "or no step has ended yet)")
    rows = []
    try:
        lines = read_jsonl(path)
    except ValueError as e:  # a line that is not JSON or not UTF-8, named with its file and line
        lines = _without_half_written_last_line(path, e)
    for lineno, row in lines:
        if not isinstance(row, dict) or not isinstance(row.get("step"), int):
            raise MetricsError(f"{path}:{lineno}: expected a JSON object with an integer 'step'")
        for key, value in row.items():
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise MetricsError(f"{path}:{lineno}: {key} is {value!r}, not a number")
        rows.append(row)
    if not rows:
        raise MetricsError(f"{path}: no steps logged yet")
    config = {}
    config_path = os.path.join(run_dir, "config.json")
    if os.path.exists(config_path):
        try:
            with open(config_path) as f:
                config = json.load(f)
        except json.JSONDecodeError as e:
            raise MetricsError(f"{config_path}:{e.lineno}: not valid JSON ({e.msg})") from None
    name = os.path.basename(os.path.normpath(run_dir))
    label = f"{name}: {method_name(config)}, seed {config['seed']}" if config else name
    return {"dir": run_dir, "label": label, "config": config, "rows": rows}


def _without_half_written_last_line(path, error):
    """The rows of a metrics file whose last line a killed run left half-written, without its newline
    (train.py drops it on resume, and so does plot.py, with a warning); any other bad line is an error naming
    it."""
    with open(path, "rb") as f:
        numbered = [(n, raw) for n, raw in enumerate(f, 1) if raw.strip()]
    if numbered[-1][1].endswith(b"\n"):  # a complete bad line is damage, not a write cut short
        raise MetricsError(str(error)) from None
    try:
        json.loads(numbered[-1][1])
        raise MetricsError(str(error)) from None  # the last line is fine: the bad one is earlier
    except ValueError:
        pass
    try:
        rows = read_jsonl(path, limit=len(numbered) - 1)
    except ValueError as e:
        raise MetricsError(str(e)) from None
    warnings.warn(f"{path}:{numbered[-1][0]}: dropping the half-written last line (the run was stopped while "
                  "writing it)")
    return rows


def series(rows, key, count_key=None):
    """(steps, values) of a metric over the steps that logged it (and, with count_key, had count > 0)."""
    points = [(r["step"], r[key]) for r in rows if r.get(key) is not None
              and (count_key is None or (r.get(count_key) or 0) > 0) and math.isfinite(r[key])]
    return [s for s, _ in points], [v for _, v in points]


def graduation_by_bin(rows):
    """{bin "k/n": (graduated, admitted)} from the running totals of the last step that logged them."""
    for row in reversed(rows):
        bins = {f"{m.group(1)}/{m.group(2)}": key for key in row if (m := _ADMITTED.fullmatch(key))}
        if bins:
            return {b: (row.get(f"buffer/graduated_total_from_{b}", 0), row[key]) for b, key in bins.items()}
    return {}


def mechanism(rows, group):
    """Over a run's steps: plain groups, those at 0/G (no gradient without a teacher), their BCQ/NCQ groups
    and how many of those had a correct rollout (a gradient), and the BCQ rollouts on 0/G questions and how
    many were right (train.step_metrics' count/plain_zero, count/zero_*, count/bcq_zero, acc/bcq_zero)."""
    total = lambda key: sum(r.get(key, 0) for r in rows)
    bcq_rollouts = [(r.get("acc/bcq_zero", 0.0), r.get("count/bcq_zero", 0) * group) for r in rows]
    return {"plain_groups": total("count/questions"), "plain_zero": total("count/plain_zero"),
            "zero_reformulated": total("count/zero_reformulated"), "zero_solved": total("count/zero_solved"),
            "bcq_zero": total("count/bcq_zero"), "bcq_zero_rollouts": sum(n for _, n in bcq_rollouts),
            "bcq_zero_correct_rollouts": round(sum(a * n for a, n in bcq_rollouts))}


def phase_times(rows, stat=statistics.mean):
    """Seconds per step of each phase that took time, and 'other' (the rest of time/step): the mean over
    steps, or another `stat` (statistics.median: robust to a step slowed by other work on the machine)."""
    times = {p: stat([r.get(f"time/{p}", 0) for r in rows]) for p in PHASES}
    times = {p: t for p, t in times.items() if t > 0}
    if any("time/step" in r for r in rows):
        times["other"] = max(0.0, stat([r.get("time/step", 0) for r in rows]) - sum(times.values()))
    return times


def _bin_order(b):
    k, n = b.split("/")
    return int(k) / int(n), b


def draw_lines(ax, curves, title, ylabel):
    """curves: (label, steps, values, style) per line; style is a dict for matplotlib. Returns lines drawn."""
    drawn = 0
    for label, steps, values, style in curves:
        if steps:
            ax.plot(steps, values, label=label, marker="o" if len(steps) < 30 else None, markersize=3,
                    **style)
            drawn += 1
    ax.set(title=title, xlabel="step", ylabel=ylabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    return drawn


def draw_band(ax, steps, mean, low, high, label, color):
    """A mean curve with a shaded interval (e.g. 95% over seeds); low/high may be None (one seed)."""
    ax.plot(steps, mean, label=label, color=color, marker="o", markersize=3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if low is not None and all(v is not None for v in low + high):
        ax.fill_between(steps, low, high, color=color, alpha=0.2)


def draw_graduation(ax, entries):
    """Grouped bars: graduation rate per admission bin, one bar per entry (label, {bin: (graduated,
    admitted)}, colour); each bar is labelled graduated/admitted."""
    entries = [e for e in entries if any(a > 0 for _, a in e[1].values())]  # runs without a buffer: no bars
    bins = sorted({b for _, g, _ in entries for b, (_, a) in g.items() if a > 0}, key=_bin_order)
    width = 0.8 / max(1, len(entries))
    for i, (label, grad, color) in enumerate(entries):
        xs, rates, notes = [], [], []
        for x, b in enumerate(bins):
            g, a = grad.get(b, (0, 0))
            if a > 0:
                xs.append(x - 0.4 + width * (i + 0.5))
                rates.append(g / a)
                notes.append(f"{g:g}/{a:g}")
        bars = ax.bar(xs, rates, width=width, label=label, color=color)
        for bar, note in zip(bars, notes):
            ax.annotate(note, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom",
                        fontsize=7)
    ax.set_xticks(range(len(bins)), bins)
    ax.set(title="graduation rate by admission bin", xlabel="plain accuracy when admitted",
           ylabel="graduated / admitted", ylim=(0, 1.15))
    ax.grid(alpha=0.3, axis="y")


def draw_phase_times(ax, entries, stat="mean"):
    """Stacked bars: seconds per step by phase (`stat` names the statistic), one bar per entry (label,
    {phase: seconds})."""
    phases = [p for p in (*PHASES, "other") if any(p in t for _, t in entries)]
    bottoms = [0.0] * len(entries)
    for k, phase in enumerate(phases):
        heights = [t.get(phase, 0.0) for _, t in entries]
        ax.bar(range(len(entries)), heights, bottom=bottoms, label=phase, color=f"C{k}")
        bottoms = [b + h for b, h in zip(bottoms, heights)]
    ax.set_xticks(range(len(entries)), [label for label, _ in entries], rotation=20, ha="right", fontsize=7)
    ax.set(title=f"seconds per step by phase ({stat})", ylabel="seconds")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, axis="y")


def _line_panel(key, title, ylabel, count_key=None):
    def draw(ax, runs):
        return draw_lines(ax, [(r["label"], *series(r["rows"], key, count_key), {"color": r["color"]})
                               for r in runs], title, ylabel)
    return draw


def _bcq_ncq(ax, runs):
    curves = []
    for r in runs:
        for kind, dash in (("bcq", "-"), ("ncq", "--")):
            curves.append((f"{r['label']} {kind.upper()}", *series(r["rows"], f"acc/{kind}", f"count/{kind}"),
                           {"color": r["color"], "linestyle": dash}))
    return draw_lines(ax, curves, "BCQ (solid) and NCQ (dashed) accuracy", "accuracy")


def _graduation(ax, runs):
    entries = [(r["label"], graduation_by_bin(r["rows"]), r["color"]) for r in runs]
    if not any(a > 0 for _, g, _ in entries for _, a in g.values()):
        return 0
    draw_graduation(ax, entries)
    return 1


def _times(ax, runs):
    entries = [(r["label"], phase_times(r["rows"])) for r in runs]
    if not any(t for _, t in entries):
        return 0
    draw_phase_times(ax, entries)
    return 1


def _throughput(ax, runs):
    curves = [(f"{r['label']} {what}", *series(r["rows"], f"perf/{what}_tokens_per_s"),
               {"color": r["color"], "linestyle": dash})
              for r in runs for what, dash in (("rollout", "-"), ("update", "--"))]
    return draw_lines(ax, curves, "tokens/s: rollout (solid), update (dashed)", "tokens per second")


def _evals(ax, runs):
    names = sorted({k for r in runs for row in r["rows"] for k in row
                    if k.startswith("eval/") and k != "eval/failed"})
    curves = [(f"{r['label']} {name[5:]}" if len(names) > 1 else r["label"], *series(r["rows"], name),
               {"color": r["color"], "linestyle": ("-", "--", ":", "-.")[i % 4]})
              for r in runs for i, name in enumerate(names)]
    return draw_lines(ax, curves, "evaluation (eval/NAME)", "accuracy")


PANELS = [
    ("plain", _line_panel("acc/plain", "plain accuracy (training rollouts)", "accuracy")),
    ("bcq_ncq", _bcq_ncq),
    ("positive_adv", _line_panel("adv/positive_frac", "rollouts with a positive advantage", "fraction")),
    ("zero_solved", _line_panel("count/zero_solved", "all-wrong (0/G) questions a BCQ/NCQ gave a gradient",
                                "questions")),
    ("buffer", _line_panel("buffer/size", "replay buffer size", "questions")),
    ("graduation", _graduation),
    ("time", _times),
    ("throughput", _throughput),
    ("mfu", _line_panel("perf/mfu", "model FLOPs utilisation (perf/mfu)", "fraction of the peak")),
    ("eval", _evals),
]


def plot_runs(runs, out, title=None, cols=3):
    """Draw every panel some run has data for into one PNG at `out`; returns the names of the panels drawn."""
    for i, r in enumerate(runs):
        r.setdefault("color", f"C{i % 10}")
    # draw each panel on a scratch figure first, to know which have data, then lay out only those
    scratch = plt.figure()
    kept = [(name, draw) for name, draw in PANELS if draw(scratch.add_subplot(), runs)]
    plt.close(scratch)
    if not kept:
        raise MetricsError("no metric to plot in " + ", ".join(r["dir"] for r in runs))
    rows = math.ceil(len(kept) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.8 * rows), squeeze=False)
    for ax, (name, draw) in zip(axes.flat, kept):
        draw(ax, runs)
        if name != "time" and (len(runs) > 1 or name in ("bcq_ncq", "eval", "throughput")):
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(kept):]:
        ax.set_visible(False)
    fig.suptitle(title or ", ".join(r["label"] for r in runs), fontsize=10)
    fig.tight_layout()
    save_figure(fig, out)
    return [name for name, _ in kept]


def save_figure(fig, out):
    folder = os.path.dirname(os.path.abspath(out))
    os.makedirs(folder, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="train.py run folders (metrics.jsonl)")
    parser.add_argument("--out", type=str, default=None,
                        help="PNG file (default: RUN_DIR/metrics.png for one run, runs.png for several)")
    parser.add_argument("--title", type=str, default=None, help="figure title (default: the runs' labels)")
    args = parser.parse_args(argv)
    out = args.out or (os.path.join(args.run_dirs[0], "metrics.png") if len(args.run_dirs) == 1
                       else "runs.png")
    try:
        runs = [load_run(d) for d in args.run_dirs]
        panels = plot_runs(runs, out, args.title)
    except MetricsError as e:
        raise SystemExit(f"plot.py: {e}") from None
    print(f"{out}: {', '.join(panels)}")
    return out


if __name__ == "__main__":
    main()
