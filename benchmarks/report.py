"""What an evaluation reports: the markdown table, `eval.py --list`, the results file in the shape
lm-evaluation-harness writes (and lmms-eval, which copies it), and the per-sample logs of --log-samples.

The results file has lm-evaluation-harness's top-level keys (results, groups, group_subtasks, configs,
versions, n-shot, higher_is_better, n-samples, config, git_hash, date, ...), metric names as it writes them
("acc,none", "acc_stderr,none": metric, comma, filter), so a reader of its files reads this one; the
project's own fields ride along (status, benchmarks, macro, errors). A run still going, or killed, is
"status": "incomplete" with no results at all, so nothing reads it as a result.
"""
import hashlib
import json
import os
import subprocess
import time

from benchmarks import BENCHMARKS, PAPER_FAMILIES, paper_families

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE_FIELDS = ("question", "stem", "options", "images", "videos", "meta", "route")


def source_of(spec):
    """Where a benchmark's rows come from, as --list prints it."""
    if spec["hub"] is None:
        return "generated"
    configs = spec.get("configs")
    where = (f" ({len(configs)} configs)" if configs else f" config {spec['config']}" if spec.get("config")
             else "")
    splits = spec.get("splits")
    split = f"splits {splits[0]}..{splits[-1]}" if splits else f"split {spec['split']}"
    return f"{spec['hub']}{where}, {split}"


def list_table():
    """Every benchmark with its family, source and protocol (the paper's families first)."""
    order = sorted(BENCHMARKS,
                   key=lambda n: (list(PAPER_FAMILIES) + ["math", "extra"]).index(BENCHMARKS[n]["family"]))
    lines = ["| benchmark | family | source | protocol |", "| --- | --- | --- | --- |"]
    lines += [f"| {n} | {BENCHMARKS[n]['family']} | {source_of(BENCHMARKS[n])} | "
              f"{BENCHMARKS[n]['protocol']} |" for n in order]
    counts = ", ".join(f"{fam} {len(names)}" for fam, names in paper_families().items())
    return "\n".join(lines + [f"paper families: {counts}; math and extra are not in the paper's averages"])


def markdown_table(summary):
    """One line per benchmark, each family's macro average, then what needs saying: the paper families'
    absent benchmarks, failures, failed judge calls, and the benchmarks' own headline numbers."""
    head = ["benchmark", "family", "protocol", "accuracy (%)", "± s.e.", "questions x k", "skipped", "judged",
            "unresolved", "seconds"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for name, r in summary["benchmarks"].items():
        skipped = sum(r["skipped"].values())
        why = f" ({', '.join(f'{k} {v}' for k, v in r['skipped'].items())})" if skipped else ""
        lines.append(f"| {name} | {r['family']} | {r['protocol']} | {100 * r['accuracy']:.1f} "
                     f"| {100 * r['stderr']:.1f} | {r['questions']} x {r['samples']} | {skipped}{why} "
                     f"| {r['judged']} | {r['unresolved']} | {r['seconds']:.0f} |")
    for fam, acc in summary["macro"].items():
        lines.append(f"| **{fam} (macro)** | {fam} | mean of {summary['macro_over'][fam]} | {100 * acc:.1f} "
                     "| | | | | | |")
    for name in summary["errors"]:
        lines.append(f"| {name} | failed | | | | | | | | |")
    for fam, absent in summary.get("macro_missing", {}).items():
        total = len(paper_families()[fam])
        lines.append(f"{fam} macro is over {total - len(absent)} of the paper's {total}; missing: "
                     f"{', '.join(absent)}")
    lines += [f"failed: {name}: {err}" for name, err in summary["errors"].items()]
    lines += [f"judge failed: {name}: {r['judge_failed']} of {r['judged']} judge calls (scored 0)"
              for name, r in summary["benchmarks"].items() if r.get("judge_failed")]
    lines += [f"upstream headline: {name}: " + ", ".join(f"{k} {100 * v:.1f}" for k, v in up.items())
              for name, up in ((n, r.get("upstream")) for n, r in summary["benchmarks"].items()) if up]
    return "\n".join(lines)


def git_hash():
    """The checkout's commit (short), as lm-evaluation-harness records it; None outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def task_config(name, sampling, max_new_tokens, samples):
    """A benchmark's entry under "configs", in lm-evaluation-harness's task-config vocabulary."""
    spec = BENCHMARKS[name]
    metrics = [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}]
    return {"task": name, "tag": [spec["family"]], "dataset_path": spec["hub"],
            "dataset_name": spec.get("config") or spec.get("configs"), "test_split": spec.get("splits") or
            spec["split"], "output_type": "generate_until", "num_fewshot": 0, "repeats": samples,
            "generation_kwargs": {**sampling, "max_gen_toks": max_new_tokens, "do_sample": True},
            "metric_list": metrics, "protocol": spec["protocol"], "family": spec["family"],
            "metadata": {"version": VERSION}}


VERSION = 2.0  # the scorers' version, as each task's "versions" entry


def results_file(summary, names, eval_config, sampling, started, status):
    """The results file: lm-evaluation-harness's shape, the project's fields beside it. `status`
    "incomplete" (a run still going or killed) reports no results; "complete" (every benchmark run, failures
    included and listed) reports them."""
    done = status == "complete"
    bench = summary["benchmarks"] if done else {}
    results, higher, n_samples = {}, {}, {}
    for name, r in bench.items():
        results[name] = {"alias": name, "acc,none": r["accuracy"], "acc_stderr,none": r["stderr"],
                         **{f"{k},none": v for k, v in (r.get("upstream") or {}).items()}}
        # WeMath's IK, IG and RM rates are failures: lower is better
        upstream = r.get("upstream") or {}
        higher[name] = {"acc": True, **{k: not k.startswith(("ik_", "ig_", "rm_")) for k in upstream}}
        n_samples[name] = {"original": r["questions"] + sum(r["skipped"].values()),
                           "effective": r["questions"]}
    groups = {fam: {"alias": fam, "acc,none": acc, "acc_stderr,none": "N/A"}
              for fam, acc in (summary["macro"] if done else {}).items()}
    members = {fam: [n for n in bench if BENCHMARKS[n]["family"] == fam] for fam in groups}
    max_new_tokens, samples = eval_config.get("max_new_tokens"), eval_config.get("samples")
    model = eval_config.get("model")
    ended = time.time()
    return {
        "status": status,
        "results": results,
        "groups": groups,
        "group_subtasks": members,
        "configs": {n: task_config(n, sampling, max_new_tokens, samples) for n in bench},
        "versions": {n: VERSION for n in bench},
        "n-shot": {n: 0 for n in bench},
        "higher_is_better": {**higher, **{fam: {"acc": True} for fam in groups}},
        "n-samples": n_samples,
        "config": {"model": "zppo-eval.py", "model_args": f"pretrained={model}",
                   "batch_size": eval_config.get("batch_size"), "device": eval_config.get("device"),
                   "limit": eval_config.get("limit"),
                   "gen_kwargs": {**sampling, "max_gen_toks": max_new_tokens},
                   "random_seed": eval_config.get("seed"), "numpy_seed": None,
                   "torch_seed": eval_config.get("seed"), "fewshot_seed": None, "eval_py": eval_config},
        "git_hash": git_hash(),
        "date": started,
        "model_name": model,
        "model_name_sanitized": str(model).replace("/", "__"),
        "start_time": started,
        "end_time": ended,
        "total_evaluation_time_seconds": str(ended - started),
        "task_hashes": {},
        # the project's own fields (docs/evaluation.md)
        "benchmarks": {n: {k: v for k, v in r.items() if k not in ("records", "examples")}
                       for n, r in bench.items()},
        "macro": summary["macro"] if done else {},
        "macro_over": summary["macro_over"] if done else {},
        "macro_missing": summary["macro_missing"] if done else {},
        "errors": summary["errors"],
        "finished": list(summary["benchmarks"]) + list(summary["errors"]),
        "pending": [n for n in names if n not in summary["benchmarks"] and n not in summary["errors"]],
    }


def sample_records(examples, records, name):
    """One line per question, as lm-evaluation-harness's samples_TASK.jsonl: doc_id, doc, target, arguments,
    resps (the k responses), filtered_resps (what was scored of each), metrics and the mean `acc`; the
    project's fields beside them (scored_by, truncated, judge replies)."""
    examples_by_id, by_id = {ex["id"]: ex for ex in examples}, {}
    for r in records:
        by_id.setdefault(r["id"], []).append(r)
    out = []
    for doc_id, (row_id, rs) in enumerate(by_id.items()):
        ex = examples_by_id.get(row_id, {})
        doc = {"id": row_id, **{k: ex[k] for k in SAMPLE_FIELDS if k in ex}}
        prompt = json.dumps(doc.get("question"), ensure_ascii=False)
        target = rs[0]["answer"]
        out.append({"doc_id": doc_id, "doc": doc, "target": target, "arguments": [[doc.get("question")]],
                    "resps": [[r["response"] for r in rs]], "filtered_resps": [r["extracted"] for r in rs],
                    "filter": "none", "metrics": ["acc"], "acc": sum(r["score"] for r in rs) / len(rs),
                    "doc_hash": _sha(json.dumps(doc, sort_keys=True, ensure_ascii=False, default=str)),
                    "prompt_hash": _sha(prompt), "target_hash": _sha(json.dumps(target, default=str)),
                    "task_name": name, "scored_by": [r["scored_by"] for r in rs],
                    "scores": [r["score"] for r in rs], "truncated": [r["truncated"] for r in rs],
                    **({"judge_replies": [r.get("judge_reply") for r in rs]}
                       if any("judge_reply" in r for r in rs) else {})})
    return out


def _sha(text):
    return hashlib.sha256(text.encode()).hexdigest()
