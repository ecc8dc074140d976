"""What only a GPU shows, in one short run (a few minutes on one GPU; docs/gpus.md has its last output).

    python scripts/gpu_check.py                # one GPU: a random model of Qwen3.5-0.8B's text shape
    python scripts/gpu_check.py --cpu --tiny   # the same stages on CPU with tiny models (what the tests run)

Each stage runs in its own process and prints as it ends; one that fails does not hide the others.
1. FSDP on one rank in bf16 (tests/dist_update.py --fsdp --bf16): the dtype RoPE's inv_freq has inside the
   forward (must stay float32), the trainer passes, the update's metrics.
2. train.py --fsdp for 3 steps, vLLM engine where installed (else transformers): the sync gap
   (sync/logprob_abs_diff) of every step, the time of each phase.
3. The vLLM engine's in-place reload (tests/vllm_sync.py) with each model runner the release has
   (VLLM_USE_V2_MODEL_RUNNER=0 and 1; CUDA's default in 0.32 is V2, the CPU build has only V1) and with
   sleep mode on and off (GPU only): the tensors spot-checked after every reload, whether vLLM's config was
   set inside it, the log-prob gap fresh / stale / after each reload, a prompt over the engine's context.
"""
import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.append(os.path.join(ROOT, "tests"))
from scripts import number
from tiny import SHAPE_TINY, build_random_model, build_tiny_dense

SHAPE_08B = dict(vocab_size=248_320, hidden_size=1024, intermediate_size=3584, num_hidden_layers=24,
                 layer_types=["linear_attention"] * 3 + ["full_attention"], num_attention_heads=8,
                 num_key_value_heads=2, head_dim=256, linear_num_key_heads=16, linear_num_value_heads=16,
                 linear_key_head_dim=128, linear_value_head_dim=128)
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.path.join(ROOT, "tests")])}
for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "ACCELERATE_USE_FSDP"):
    ENV.pop(key, None)  # each stage is a plain single process


def stage(name, cmd, timeout, env=None):
    """Runs one stage; prints its result, seconds and the lines that matter; returns its output or None."""
    start = time.time()
    try:
        res = subprocess.run(cmd, cwd=ROOT, env={**ENV, **(env or {})}, capture_output=True, text=True,
                             timeout=timeout, check=False)
        ok, out = res.returncode == 0, res.stdout + res.stderr
    except subprocess.TimeoutExpired:
        ok, out = False, f"timed out after {timeout} s"
    print(f"\n### {name}: {'ok' if ok else 'FAILED'} ({time.time() - start:.0f} s)", flush=True)
    if not ok:
        print("```\n" + "\n".join(out.splitlines()[-15:]) + "\n```", flush=True)
    return out if ok else None


def result(out):
    """The RESULT {json} line a test script prints."""
    return json.loads(out.split("RESULT ", 1)[1].splitlines()[0])


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="/tmp/zppo_gpu_check", help="models and runs go here")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU (no sleep mode, one runner)")
    parser.add_argument("--tiny", action="store_true", help="tiny models instead of Qwen3.5-0.8B's shape")
    parser.add_argument("--stage-timeout", type=number(int, 30), default=300, help="seconds per stage")
    args = parser.parse_args()
    import torch

    gpu = torch.cuda.is_available() and not args.cpu
    print(f"device: {torch.cuda.get_device_name() if gpu else 'cpu'}, torch {torch.__version__}, vLLM "
          f"{'installed' if importlib.util.find_spec('vllm') else 'not installed'}", flush=True)
    os.makedirs(args.work, exist_ok=True)
    model = os.path.join(args.work, "qwen35")
    if not os.path.exists(os.path.join(model, "config.json")):
        build_random_model(model, SHAPE_TINY if args.tiny else SHAPE_08B)

    out = stage("1. FSDP on one rank, bf16", [sys.executable, "tests/dist_update.py", model,
                                               os.path.join(args.work, "update.json"), "--fsdp", "--bf16"],
                args.stage_timeout)
    if out is not None:
        with open(os.path.join(args.work, "update.json")) as f:
            got = json.load(f)
        print(f"inv_freq inside the forward: {', '.join(got['inv_freq'])}; passes {got['passes']}; "
              f"loss {got['metrics']['train/loss']:.4g}, grad norm {got['metrics']['train/grad_norm']:.4g}")

    vllm = importlib.util.find_spec("vllm") is not None
    # vLLM's CPU build cannot load Qwen3.5: there its tiny dense model (Qwen3) stands in
    dense = model if gpu else build_tiny_dense(os.path.join(args.work, "dense")) if vllm else None
    engine, run = "vllm" if vllm else "transformers", os.path.join(args.work, "run")
    cmd = [sys.executable, "train.py", "--student", dense or model, "--teacher", "gold", "--data",
           "arithmetic", "--data-limit", "64", "--questions-per-step", "8", "--group-size", "4",
           "--max-new-tokens", "64", "--max-prompt-tokens", "512", "--max-model-len", "2048",
           "--iters-per-step", "2", "--lr", "1e-5", "--steps", "3", "--save-every", "0", "--no-skip-zero-adv",
           "--fsdp", "--overwrite", "--out-dir", run, "--engine", engine, "--vllm-gpu-memory-utilization",
           "0.3" if gpu else "0.15", "--mixed-precision", "bf16" if gpu else "no"]
    if stage(f"2. train.py --fsdp, 3 steps, {engine} engine", cmd, args.stage_timeout):
        with open(os.path.join(run, "metrics.jsonl")) as f:
            for m in map(json.loads, f):
                print(f"step {m['step']}: sync gap {m['sync/logprob_abs_diff']:.3g}, "
                      + ", ".join(f"{k[5:]} {v:.1f} s" for k, v in m.items() if k.startswith("time/")))

    if not vllm:
        print("\n### 3. vLLM reload: skipped (vLLM is not installed)")
        return
    for runner in (("0", "1") if gpu else ("0",)):
        for sleep in ((False, True) if gpu else (False,)):
            out = stage(f"3. vLLM reload, V{int(runner) + 1} model runner{', sleep mode' if sleep else ''}",
                        [sys.executable, "tests/vllm_sync.py", dense] + (["--sleep"] if sleep else []),
                        args.stage_timeout, env={"VLLM_USE_V2_MODEL_RUNNER": runner})
            if out is not None:
                r = result(out)
                print(f"spot-checked: {', '.join(r['spot']) or 'none'}; config set in every reload: "
                      f"{all(r['config_set'])}; gap fresh {r['fresh']['max']:.2g}, stale "
                      f"{r['stale']['mean']:.2g}, after reloads {r['synced']['max']:.2g} / "
                      f"{r['synced_again']['max']:.2g}; too long: {r['too_long']}")


if __name__ == "__main__":
    main()
