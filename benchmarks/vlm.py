"""The smaller pieces of the paper's VLM benchmarks (its Table 5) that the generic loading and grading leave:
BabyVision's two answer types, VLMs-are-Blind's curly-bracket answers, and the headline numbers the
benchmarks' own evaluators report beside the paper's accuracy: DynaMath's worst case, WeMath's
four-dimensional scores, VLMs-are-Blind's mean over tasks, MMMU-Pro's overall.

A headline function takes (examples, records, samples) and returns {metric: value}; a record is one response
with its row's `id`, its `sample` index (0..k-1) and its `score`. With k samples per question a headline is
computed on each sample index's answers and averaged over them (avg@k of the upstream metric).
"""
import re
from collections import defaultdict

from data import answer_text


def by_sample(records, samples):
    """[{row id: score} for each sample index]."""
    out = [{} for _ in range(samples)]
    for r in records:
        out[r["sample"]][r["id"]] = r["score"]
    return out


def convert_babyvision(row, spec, where):
    """ansType "choice": options listed, choiceAns an index; otherwise blankAns, a free-form short answer."""
    if row["ansType"] == "choice":
        options = row.get("options") or []
        index = row.get("choiceAns")
        if not options or index is None or not 0 <= int(index) < len(options):
            return "answer_format"
        return {"choices": [str(o) for o in options], "letter_index": int(index)}
    answer = answer_text(row.get("blankAns"))
    return "answer_format" if answer is None else {"answer": answer, "route": "rule"}


# ---------------------------------------------------------------------------------------------------------
# VLMs-are-Blind (XAI/vlmsareblind)

_CURLY = re.compile(r"[^.?!\n]*curly brackets?(?:,?\s*(?:e\.g\.|for example),?\s*\{[^}]*\})?[^.?!\n]*[.?!]?",
                    re.IGNORECASE)


def convert_vlmsareblind(row, spec, where):
    """BlindTest asks for the answer in curly brackets ("{3}"): that directive goes (the closer asks for
    \\boxed{}), and a gold answer written "{3}" is read as 3. A counting-grid gold "5,6" (rows, columns)
    stays an ordered pair: never the number 56 (a comma is a thousands separator only in 1,000-style
    numbers), never 6,5."""
    question = _CURLY.sub("", str(row["prompt"])).strip()
    gold = str(row["groundtruth"]).strip()
    inner = re.fullmatch(r"\{(.*)\}", gold)
    gold = inner.group(1).strip() if inner else gold
    grid = re.fullmatch(r"(\d+)\s*,\s*(\d+)", gold)
    # rows, columns: upstream compares "5,6" as text, so the order counts; the grader reads "(5,6)" as an
    # ordered pair ("5,6" alone would be a set)
    if grid:
        gold = f"({grid.group(1)},{grid.group(2)})"
    return {"question": question, "answer": gold, "route": "rule"}


def vlmsareblind_headline(examples, records, samples):
    """lmms-eval vlmsareblind_aggregate_by_task: the mean of the per-task accuracies, the two counting-grid
    tasks as one."""
    task = {ex["id"]: str(ex["meta"].get("task") or "").lower() for ex in examples}
    task = {i: {"counting grid - blank grids": "counting grid",
                "counting grid - word grids": "counting grid"}.get(t, t) for i, t in task.items()}
    means = []
    for scores in by_sample(records, samples):
        per = defaultdict(list)
        for i, s in scores.items():
            per[task[i]].append(s)
        means.append(sum(sum(v) / len(v) for v in per.values()) / len(per))
    return {"task_mean": sum(means) / len(means)}


# ---------------------------------------------------------------------------------------------------------
# DynaMath (DynaMath/DynaMath_Sample: 10 variants of each of 501 seed questions)


def dynamath_headline(examples, records, samples):
    """DynaMath's two numbers (its paper; lmms-eval dynamath_aggregate_results): the average-case accuracy
    over all variants and the worst-case accuracy, the share of seed questions answered right in every one
    of their variants."""
    seed = {ex["id"]: str(ex["meta"].get("id")) for ex in examples}
    worst, average = [], []
    for scores in by_sample(records, samples):
        per = defaultdict(list)
        for i, s in scores.items():
            per[seed[i]].append(s)
        worst.append(sum(min(v) for v in per.values()) / len(per))
        average.append(sum(scores.values()) / len(scores))
    return {"worst_case_acc": sum(worst) / len(worst), "average_acc": sum(average) / len(average)}


# ---------------------------------------------------------------------------------------------------------
# WeMath (We-Math/We-Math testmini): the four-dimensional metrics of We-Math's
# evaluation/four_dimensional_metrics.py


def wemath_headline(examples, records, samples):
    """A composite problem (`ID`) is asked whole (`key` "2steps_multi" / "3steps_multi") and in its sub-
    problems ("2steps_1", "2steps_2", ...). Per composite, from the sub-problems' and the whole's
    correctness: insufficient knowledge IK (a sub-problem wrong, the whole wrong), inadequate
    generalization IG (every sub-problem right, the whole wrong), complete mastery CM (strict: every sub-
    problem right and the whole; loose: one sub-problem right and the whole), rote memorization RM
    (strict: a sub-problem wrong yet the whole right; loose: every sub-problem wrong yet the whole right).
    A sub-problem row that is missing counts as neither right nor wrong (upstream's pandas merge). Scores:
    (N - 0.5 IG - RM - IK) / N, strict and loose, N the number of composite problems; rates IK / N, IG /
    N, CM / N, RM / (CM + RM). Upstream fixes N at 525, testmini's count of composites; here N is the
    count present (525 on the whole testmini)."""
    meta = {ex["id"]: (str(ex["meta"].get("ID")), str(ex["meta"].get("key") or "")) for ex in examples}
    runs = []
    for scores in by_sample(records, samples):
        right = {meta[i]: s == 1.0 for i, s in scores.items()}
        counts = defaultdict(int)
        composites = 0
        for steps in (2, 3):
            for pid in sorted({p for (p, key) in right if key == f"{steps}steps_1"}):
                composites += 1
                parts = [right.get((pid, f"{steps}steps_{k}")) for k in range(1, steps + 1)]
                whole = right.get((pid, f"{steps}steps_multi"))
                wrong_part = any(p is False for p in parts)
                all_right = all(p is True for p in parts)
                counts["IK"] += wrong_part and whole is False
                counts["IG"] += all_right and whole is False
                counts["CM_strict"] += all_right and whole is True
                counts["CM_loose"] += any(p is True for p in parts) and whole is True
                counts["RM_strict"] += wrong_part and whole is True
                counts["RM_loose"] += all(p is False for p in parts) and whole is True
        if composites:
            runs.append(_wemath_scores(counts, composites))
    return {k: sum(r[k] for r in runs) / len(runs) for k in runs[0]} if runs else {}


def _wemath_scores(c, n):
    def share(a, b):
        return a / b if b else 0.0

    return {"score_strict": (n - 0.5 * c["IG"] - c["RM_strict"] - c["IK"]) / n,
            "score_loose": (n - 0.5 * c["IG"] - c["RM_loose"] - c["IK"]) / n,
            "ik_rate": c["IK"] / n, "ig_rate": c["IG"] / n, "cm_strict_rate": c["CM_strict"] / n,
            "cm_loose_rate": c["CM_loose"] / n,
            "rm_strict_rate": share(c["RM_strict"], c["CM_strict"] + c["RM_strict"]),
            "rm_loose_rate": share(c["RM_loose"], c["CM_loose"] + c["RM_loose"])}


# ---------------------------------------------------------------------------------------------------------
# MMMU-Pro (MMMU/MMMU_Pro, three configs)


def mmmu_pro_headline(examples, records, samples):
    """Each config's accuracy and MMMU-Pro's overall as its authors report it: the mean of the standard
    (10 options) and vision accuracies (the 4-option config is their ablation)."""
    config = {ex["id"]: ex["meta"].get("config") for ex in examples}
    per = defaultdict(list)
    for r in records:
        per[config[r["id"]]].append(r["score"])
    out = {"acc_" + re.sub(r"\W+", "_", name).strip("_"): sum(v) / len(v) for name, v in sorted(per.items())}
    if "standard (10 options)" in per and "vision" in per:
        out["overall"] = (out["acc_standard_10_options"] + out["acc_vision"]) / 2
    return out
