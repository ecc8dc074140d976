"""What a step writes: its numbers (ZPPO.md, "What to log per step"), metrics.jsonl, the optional dumps, and
the evaluation that runs every --eval-every steps. Written by the main process only."""
import json
import os
import warnings

import torch

from checkpoint import atomic_write
from config import TEACHER_GUIDED
from reformulate import hint_leaks
from zppo import reduce_sum


def mean(xs):
    xs = list(xs)
    return sum(xs) / len(xs) if xs else 0.0


def step_metrics(cfg, plain, helped, eps, n_new, buffer):
    """The per-step numbers the paper's analyses need, from the step's groups and episodes."""
    acc = [mean(g.rewards) for g in plain]
    rewards = lambda kind: [r for g in helped if g.kind == kind for r in g.rewards]
    lengths = lambda groups: [len(r.token_ids) for g in groups for r in g.rollouts]
    # the mechanism: all-wrong plain groups give GRPO no gradient; a BCQ/NCQ group of such a question with a
    # correct rollout has nonzero advantages (count/zero_solved), a signal plain sampling did not have
    zero = {g.question["id"] for g, a in zip(plain, acc) if a == 0}
    zero_groups = [g for g in helped if g.question["id"] in zero]
    metrics = {
        "acc/plain": mean(r for g in plain for r in g.rewards), "acc/plain_new": mean(acc[:n_new]),
        "acc/replay": mean(acc[n_new:]), "acc/bcq": mean(rewards("bcq")), "acc/ncq": mean(rewards("ncq")),
        "count/questions": len(plain), "count/replayed": len(plain) - n_new,
        "count/bcq": sum(g.kind == "bcq" for g in helped), "count/ncq": sum(g.kind == "ncq" for g in helped),
        "count/plain_zero": len(zero), "count/zero_reformulated": len(zero_groups),
        "count/zero_solved": sum(max(g.rewards) > 0 for g in zero_groups),
        "count/bcq_zero": sum(g.kind == "bcq" for g in zero_groups),
        "acc/bcq_zero": mean(r for g in zero_groups if g.kind == "bcq" for r in g.rewards),
        "adv/positive_frac": mean(e.adv > 0 for e in eps),
        "groups/trivial_frac": mean(max(g.rewards) == min(g.rewards) for g in plain + helped if g.rewards),
        "buffer/size": len(buffer), "len/plain": mean(lengths(plain)),
        "len/reformulated": mean(lengths(helped)),
        "len/clipped_frac": mean(r.finish_reason == "length" for g in plain + helped for r in g.rollouts),
    }
    if cfg.algo in TEACHER_GUIDED:  # the baseline's own group: acc/hint, count/hint, ...
        metrics.update({f"acc/{cfg.algo}": mean(rewards(cfg.algo)), f"count/{cfg.algo}": len(helped)})
        if cfg.algo == "hint":
            metrics["count/hint_leak"] = sum(hint_leaks(g.hint, g.question["answer"]) for g in helped)
        else:
            metrics["len/prefix"] = mean(len(g.prefix) for g in helped)
    if cfg.buffer:
        metrics.update({f"buffer/graduated_total_from_{k}": v for k, v in buffer.graduated_by_bin.items()})
        metrics.update({f"buffer/admitted_total_at_{k}": v for k, v in buffer.admitted_by_bin.items()})
    return metrics


def weight_spread(model, accelerator):
    """DDP keeps the ranks' replicas identical; check it cheaply: max - min over ranks of the sum of all
    weights. Under FSDP each rank holds other shards, no replica: None."""
    from torch.distributed.tensor import DTensor

    if any(isinstance(p, DTensor) for p in model.parameters()):
        return None
    checksum = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum().reshape(1)
    sums = accelerator.gather(checksum)
    return (sums.max() - sums.min()).item()


def teacher_tally(teacher):
    """(requests that failed, prompts asked, prompts over its context) of the teacher so far, this rank's;
    zeros for none."""
    return [getattr(teacher, key, 0) for key in ("failures", "prompts", "too_long")]


def teacher_metrics(teacher, before, step, url, accelerator):
    """count/teacher_failed and count/teacher_too_long since `before` (teacher_tally's), all ranks together
    (each rank's engine serves its share); a teacher that failed every request is said."""
    now = teacher_tally(teacher)
    failed, asked, too_long = reduce_sum(accelerator, [a - b for a, b in zip(now, before)])
    if asked and failed == asked:
        warnings.warn(f"step {step}: every one of the {asked:.0f} requests to the teacher at {url} failed "
                      "(count/teacher_failed): no teacher answers, no judge verdicts this step; is the "
                      "server up and serving --teacher?")
    return {"count/teacher_failed": int(failed), "count/teacher_too_long": int(too_long)}


def write_step(cfg, step, metrics, eps, helped, log_path, accelerator):
    """One line of metrics.jsonl and the optional dumps (rollouts.jsonl, reformulated.jsonl)."""
    if not accelerator.is_main_process:
        return
    if cfg.dump_rollouts:
        with open(os.path.join(cfg.out_dir, "rollouts.jsonl"), "a") as f:
            f.writelines(json.dumps({"step": step, "group": e.group, "kind": e.kind, "reward": e.reward,
                                     "adv": e.adv, "tokens": len(e.token_ids),
                                     "images": len(e.vision["image_grid_thw"]) if e.vision else 0}) + "\n"
                         for e in eps)
    if cfg.dump_reformulated:
        with open(os.path.join(cfg.out_dir, "reformulated.jsonl"), "a") as f:
            f.writelines(json.dumps({"step": step, "kind": g.kind, "id": g.question["id"], "prompt": g.text,
                                     "images": g.question.get("images", []), "answer": g.question["answer"],
                                     "rollouts": [{"text": r.text, "reward": x} for r, x in
                                                  zip(g.rollouts, g.rewards)]}) + "\n"
                         for g in helped)
    with open(log_path, "a") as f:
        f.write(json.dumps({"step": step, **metrics}) + "\n")
    accelerator.log({k: v for k, v in metrics.items() if v is not None}, step=step)


def add_to_step(step, metrics, log_path, accelerator):
    """Merge metrics (an evaluation that ran after the step's checkpoint) into the step's line, the last one
    of metrics.jsonl; the file is replaced atomically, so a crash leaves the line with or without them."""
    if not accelerator.is_main_process or not metrics:
        return
    with open(log_path) as f:
        lines = f.readlines()
    row = json.loads(lines[-1])
    if row["step"] != step:
        raise ValueError(f"{log_path}: the last line is step {row['step']}, not {step}")
    lines[-1] = json.dumps({**row, **metrics}) + "\n"
    atomic_write(log_path, "".join(lines))
    accelerator.log({k: v for k, v in metrics.items() if v is not None}, step=step)


def periodic_eval(student, teacher, cfg, step, log, log_path, accelerator):
    """eval.py's benchmarks every --eval-every steps and at the end, added to the step's metrics line; the
    teacher judges free-form answers. It runs after the step's checkpoint is saved, and its sampling draws on
    a forked random state, so a run resumes exactly whether or not it evaluates. A failure is reported
    (eval/failed) and training goes on."""
    if not cfg.eval_benchmarks or not ((cfg.eval_every and step % cfg.eval_every == 0) or step == cfg.steps):
        return
    try:
        from eval import run_benchmarks  # only here, only when asked: training itself never needs eval.py

        devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=devices):
            summary = run_benchmarks(student, cfg.eval_benchmarks.split(","), cfg.eval_samples,
                                     cfg.eval_max_new_tokens, judge=teacher, data_dir=cfg.eval_data_dir,
                                     limit=cfg.eval_limit, log=log)
        metrics = {f"eval/{name}": r["accuracy"] for name, r in summary["benchmarks"].items()}
        metrics.update({f"eval/macro_{fam}": acc for fam, acc in summary["macro"].items()})
        for name, r in summary["benchmarks"].items():  # judge calls that failed were scored 0: a lower bound
            if r.get("judge_failed"):
                metrics[f"eval/{name}_judge_failed"] = r["judge_failed"]
        if summary["errors"]:  # a benchmark that failed (a bad file line) is reported, not raised
            log(f"step {step}: evaluation of {', '.join(summary['errors'])} failed; training goes on")
            metrics["eval/failed"] = 1.0
        log(f"step {step}: " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
    except Exception as e:  # noqa: BLE001 (an evaluation costs its own numbers at most, never the run)
        log(f"step {step}: evaluation failed ({type(e).__name__}: {e}); training goes on")
        metrics = {"eval/failed": 1.0}
    add_to_step(step, metrics, log_path, accelerator)
