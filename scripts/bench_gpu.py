"""GPU smoke test and update benchmark, offline: a random-weight model of Qwen3.5-0.8B's text shape.

    python scripts/bench_gpu.py               # one GPU: prints markdown tables, docs/gpus.md has them
    python scripts/bench_gpu.py --tiny --cpu  # the same path on a tiny model, on CPU (what the tests run)

1. builds the model from a config (no download; a small local tokenizer, ids below the model's vocabulary)
2. train.py with configs/1gpu.yaml for 2 steps, --resume for 1 more, eval.py on its checkpoint
3. train.py with configs/fsdp.yaml in one process for 1 step, then --resume for 1 more (sharded optimizer)
4. the update alone (response_logprobs + loss + backward + AdamW step, bf16 autocast, gradient
   checkpointing) at micro-batch 1/4/8 x response 1,024/4,096/12,288 after a 256-token prompt: peak GPU
   memory and tokens per second; cells that would not finish in --budget-s are skipped, OOM is reported.
Each stage runs on its own and prints as it ends, so a stage that fails does not hide the others.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # the project's modules, when run as python scripts/bench_gpu.py
sys.path.append(os.path.join(ROOT, "tests"))  # tests/tiny.py: the model and tokenizer builders
from scripts import number
from tiny import SHAPE_TINY, build_random_model

# Qwen3.5-0.8B's text model (its config.json): 752M parameters, tied embeddings
SHAPE_08B = dict(vocab_size=248_320, hidden_size=1024, intermediate_size=3584, num_hidden_layers=24,
                 layer_types=["linear_attention"] * 3 + ["full_attention"], num_attention_heads=8,
                 num_key_value_heads=2, head_dim=256, linear_num_key_heads=16, linear_num_value_heads=16,
                 linear_key_head_dim=128, linear_value_head_dim=128)


DEADLINE = [float("inf")]  # --total-s: stages that would start after it are skipped


def run(name, cmd, timeout):
    """One stage in a subprocess; prints its command, result, seconds and last lines; returns success."""
    start = time.time()
    timeout = min(timeout, DEADLINE[0] - start)
    if timeout < 30:
        print(f"\n### {name}: skipped (--total-s reached)", flush=True)
        return False
    try:
        res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)
        ok, out = res.returncode == 0, (res.stdout + res.stderr)
    except subprocess.TimeoutExpired as e:
        ok, out = False, f"timed out after {timeout} s\n{(e.stdout or b'')[-2000:]!r}"
    tail = "\n".join(line for line in out.splitlines()[-8:])
    print(f"\n### {name}: {'ok' if ok else 'FAILED'} ({time.time() - start:.0f} s)\n```\n"
          f"{' '.join(cmd)}\n{tail}\n```", flush=True)
    return ok


def read_metrics(out_dir):
    with open(os.path.join(out_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def smoke(model, work, cpu, timeout):
    """Stages 2-3: the real command lines, end to end."""
    train_args = ["--student", model, "--teacher", "gold", "--data", "arithmetic", "--data-limit", "64",
                  "--questions-per-step", "8", "--group-size", "4", "--max-new-tokens", "64",
                  "--iters-per-step", "2", "--micro-batch-size", "8", "--lr", "1e-6", "--save-every", "0",
                  "--no-skip-zero-adv"]  # a random model fails everything: A = 0, but the update still runs
    launch = [sys.executable, "train.py"] if cpu else [sys.executable, "-m", "accelerate.commands.launch",
                                                      "--config_file", "configs/1gpu.yaml", "train.py"]
    run1 = os.path.join(work, "run_1gpu")
    ok = run("train 2 steps (configs/1gpu.yaml)", [*launch, *train_args, "--steps", "2", "--out-dir", run1],
             timeout)
    ok = ok and run("resume for a 3rd step",
                    [*launch, *train_args, "--steps", "3", "--out-dir", run1, "--resume", run1], timeout)
    if ok:
        for m in read_metrics(run1):
            print(f"step {m['step']}: acc/plain {m['acc/plain']:.3f}, #bcq {m['count/bcq']}, "
                  f"#ncq {m['count/ncq']}, sync {m['sync/logprob_abs_diff']}, "
                  f"grad_norm {m['train/grad_norm']:.3g}, rollout {m['time/rollout']:.1f} s, "
                  f"update {m['time/update']:.1f} s, step {m['time/step']:.1f} s")
        run("eval.py on the step-3 checkpoint", [sys.executable, "eval.py", "--model",
            os.path.join(run1, "checkpoints", "step_000003"), "--benchmarks", "arithmetic", "--limit", "16",
            "--max-new-tokens", "32"], timeout)
    if cpu:
        return
    fsdp = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", "configs/fsdp.yaml",
            "--num_processes", "1", "train.py"]
    run2 = os.path.join(work, "run_fsdp")
    if run("FSDP, one process, 1 step (configs/fsdp.yaml)",
           [*fsdp, *train_args, "--steps", "1", "--out-dir", run2], timeout):
        run("FSDP resume for a 2nd step (sharded optimizer state restored)",
            [*fsdp, *train_args, "--steps", "2", "--out-dir", run2, "--resume", run2], timeout)


def update_table(model_path, device, budget, micro_sizes, lengths, prompt=256):
    """Stage 4: peak memory and throughput of the update's forward + backward + optimizer step."""
    from models import load_model
    from zppo import Episode, policy_loss, response_logprobs

    model, _ = load_model(model_path, device=device)
    model.train()
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable({"use_reentrant": False})
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6, weight_decay=0.1)
    vocab = model.config.vocab_size
    gen = torch.Generator().manual_seed(0)
    print(f"\n### update: {sum(p.numel() for p in model.parameters()) / 1e6:.0f}M parameters, vocab {vocab}, "
          f"fp32 weights + AdamW, bf16 autocast, gradient checkpointing, prompt {prompt} tokens\n",
          flush=True)
    print("| micro-batch | response | peak memory (GiB) | tokens/s | seconds |\n"
          "| --- | --- | --- | --- | --- |")
    deadline, rate = time.time() + budget, None
    for mb in micro_sizes:
        for length in lengths:
            tokens = mb * (prompt + length)
            if rate and time.time() + tokens / rate > deadline:
                print(f"| {mb} | {length:,} | skipped (time) | | |", flush=True)
                continue
            seqs = [Episode(torch.randint(0, vocab, (prompt,), generator=gen).tolist(),
                            torch.randint(0, vocab, (length,), generator=gen).tolist(), adv=1.0)
                    for _ in range(mb)]
            if device == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            start = time.time()
            try:
                with torch.autocast(device, dtype=torch.bfloat16):
                    lp, mask, _ = response_logprobs(model, seqs, 1.0, 0)
                    loss, _ = policy_loss(lp, lp.detach(), torch.ones(mb, device=lp.device), mask)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if device == "cuda":
                    torch.cuda.synchronize()
            except torch.OutOfMemoryError:
                del seqs
                optimizer.zero_grad(set_to_none=True)
                print(f"| {mb} | {length:,} | out of memory | | |", flush=True)
                continue
            seconds = time.time() - start
            rate = tokens / seconds
            peak = torch.cuda.max_memory_allocated() / 2 ** 30 if device == "cuda" else float("nan")
            print(f"| {mb} | {length:,} | {peak:.1f} | {rate:,.0f} | {seconds:.1f} |", flush=True)


def counts(text):
    """A comma-separated list of integers >= 1 (--micro, --lengths)."""
    return [number(int, 1)(item) for item in text.split(",")]


def parse_args(argv=None):
    """The flags; a numeric one that cannot work stops here, before the model is built (scripts.number)."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="/tmp/zppo_gpu_smoke", help="model and runs go here")
    parser.add_argument("--tiny", action="store_true", help="a tiny model instead of Qwen3.5-0.8B's shape")
    parser.add_argument("--cpu", action="store_true", help="no accelerate configs, no FSDP: python train.py")
    parser.add_argument("--skip-smoke", action="store_true", help="only the update table")
    parser.add_argument("--skip-table", action="store_true", help="only the smoke stages")
    parser.add_argument("--stage-timeout", type=number(int, 1), default=300, help="seconds per smoke stage")
    parser.add_argument("--budget-s", type=number(float, 0, above=True), default=240,
                        help="seconds for the update table")
    parser.add_argument("--total-s", type=number(float, 0, above=True, inf=True), default=float("inf"),
                        help="seconds for everything")
    parser.add_argument("--micro", type=counts, default="1,4,8", help="micro-batch sizes of the table")
    parser.add_argument("--lengths", type=counts, default="1024,4096,12288",
                        help="response lengths of the table")
    return parser.parse_args(argv)


def main():
    args = parse_args()
    DEADLINE[0] = time.time() + args.total_s
    device = "cpu" if args.cpu else "cuda"
    if device == "cuda":
        print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    import transformers
    print(f"transformers {transformers.__version__}, python {sys.version.split()[0]}", flush=True)
    os.makedirs(args.work, exist_ok=True)
    model = os.path.join(args.work, "model")
    start = time.time()
    build_random_model(model, SHAPE_TINY if args.tiny else SHAPE_08B)
    print(f"built {model} in {time.time() - start:.0f} s", flush=True)
    if not args.skip_smoke:
        smoke(model, args.work, args.cpu, args.stage_timeout)
    if not args.skip_table:
        budget = min(args.budget_s, DEADLINE[0] - time.time() - 20)
        update_table(model, device, budget, args.micro, args.lengths)


if __name__ == "__main__":
    main()
