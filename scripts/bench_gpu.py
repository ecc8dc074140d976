"""GPU smoke test and update benchmark, offline: a random-weight model of Qwen3.5-0.8B's text shape.

    python scripts/bench_gpu.py               # one GPU: prints markdown tables, README's GPU section has them
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
# Qwen3.5-0.8B's text model (its config.json): 752M parameters, tied embeddings
SHAPE_08B = dict(vocab_size=248_320, hidden_size=1024, intermediate_size=3584, num_hidden_layers=24,
                 layer_types=["linear_attention"] * 3 + ["full_attention"], num_attention_heads=8,
                 num_key_value_heads=2, head_dim=256, linear_num_key_heads=16, linear_num_value_heads=16,
                 linear_key_head_dim=128, linear_value_head_dim=128)
SHAPE_TINY = dict(vocab_size=400, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  layer_types=["linear_attention", "full_attention"], num_attention_heads=2, num_key_value_heads=1,
                  head_dim=32, linear_num_key_heads=2, linear_num_value_heads=2, linear_key_head_dim=16,
                  linear_value_head_dim=16)
# Qwen's chat format; a message's content is a text, or a list of image and text parts (vision-language)
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}{{ m['content'] }}"
    "{% else %}{% for c in m['content'] %}{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
VISION_TINY = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                   num_position_embeddings=64, patch_size=16, spatial_merge_size=2, temporal_patch_size=2)


def build_tokenizer(shape, vision=False):
    """A byte-level BPE tokenizer trained on the prompt strings, with Qwen's chat template and special tokens
    (the vision ones with `vision`); at most 400 tokens and within the model's vocabulary."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from reformulate import BCQ_INSTRUCTION, CLOSER, NCQ_INSTRUCTION

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    if vision:
        specials += ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [CLOSER, BCQ_INSTRUCTION, NCQ_INSTRUCTION, "What is 3 + 4? The answer is \\boxed{7}. <think> </think>",
              "<candidate> </candidate> user assistant 0123456789 + - * / = ( ) { }"] * 5
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=min(400, shape["vocab_size"]), special_tokens=specials,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   chat_template=CHAT_TEMPLATE)


def build_random_model(path, shape, seed=0, vision=None, pixels=(32 * 32, 64 * 64)):
    """build_tokenizer's tokenizer and a random-weight Qwen3.5 of `shape` (layer_types repeated to the layer
    count), both saved to `path` for from_pretrained. With `vision` (a vision-tower config) it is the
    vision-language class, with its image processor (`pixels`: the processor's min and max pixels) and the
    vision special tokens."""
    from transformers import Qwen3_5Config, Qwen3_5ForCausalLM, Qwen3_5ForConditionalGeneration, Qwen3_5TextConfig

    tokenizer = build_tokenizer(shape, vision=bool(vision))
    layers = shape["num_hidden_layers"]
    config = Qwen3_5TextConfig(**{**shape, "layer_types": (shape["layer_types"] * layers)[:layers]},
                               max_position_embeddings=32_768, tie_word_embeddings=True,
                               eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                               bos_token_id=None)
    torch.manual_seed(seed)
    if vision:
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        ids = {t: tokenizer.convert_tokens_to_ids(t) for t in
               ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")}
        config = Qwen3_5Config(text_config=config.to_dict(), vision_config=vision, tie_word_embeddings=True,
                               image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                               vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
        model = Qwen3_5ForConditionalGeneration(config)
        Qwen2VLImageProcessorPil(min_pixels=pixels[0], max_pixels=pixels[1], patch_size=vision["patch_size"],
                                 merge_size=vision["spatial_merge_size"],
                                 temporal_patch_size=vision["temporal_patch_size"]).save_pretrained(path)
    else:
        model = Qwen3_5ForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


DEADLINE = [float("inf")]  # --total-s: stages that would start after it are skipped


def run(name, cmd, timeout):
    """One stage in a subprocess; prints its command, result, seconds and last lines; returns success."""
    start = time.time()
    timeout = min(timeout, DEADLINE[0] - start)
    if timeout < 30:
        print(f"\n### {name}: skipped (--total-s reached)", flush=True)
        return False
    try:
        res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        ok, out = res.returncode == 0, (res.stdout + res.stderr)
    except subprocess.TimeoutExpired as e:
        ok, out = False, f"timed out after {timeout} s\n{(e.stdout or b'')[-2000:]!r}"
    tail = "\n".join(line for line in out.splitlines()[-8:])
    print(f"\n### {name}: {'ok' if ok else 'FAILED'} ({time.time() - start:.0f} s)\n```\n{' '.join(cmd)}\n{tail}\n```",
          flush=True)
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
    ok = run("train 2 steps (configs/1gpu.yaml)", [*launch, *train_args, "--steps", "2", "--out-dir", run1], timeout)
    ok = ok and run("resume for a 3rd step", [*launch, *train_args, "--steps", "3", "--out-dir", run1, "--resume", run1],
                    timeout)
    if ok:
        for m in read_metrics(run1):
            print(f"step {m['step']}: acc/plain {m['acc/plain']:.3f}, #bcq {m['count/bcq']}, #ncq {m['count/ncq']}, "
                  f"sync {m['sync/logprob_abs_diff']}, grad_norm {m['train/grad_norm']:.3g}, "
                  f"rollout {m['time/rollout']:.1f} s, update {m['time/update']:.1f} s, step {m['time/step']:.1f} s")
        run("eval.py on the step-3 checkpoint", [sys.executable, "eval.py", "--model",
            os.path.join(run1, "checkpoints", "step_000003"), "--benchmarks", "arithmetic", "--limit", "16",
            "--max-new-tokens", "32"], timeout)
    if cpu:
        return
    fsdp = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", "configs/fsdp.yaml",
            "--num_processes", "1", "train.py"]
    run2 = os.path.join(work, "run_fsdp")
    if run("FSDP, one process, 1 step (configs/fsdp.yaml)", [*fsdp, *train_args, "--steps", "1", "--out-dir", run2],
           timeout):
        run("FSDP resume for a 2nd step (sharded optimizer state restored)",
            [*fsdp, *train_args, "--steps", "2", "--out-dir", run2, "--resume", run2], timeout)


def update_table(model_path, device, budget, micro_sizes, lengths, prompt=256):
    """Stage 4: peak memory and throughput of the update's forward + backward + optimizer step."""
    from rollout import load_model
    from zppo import Episode, policy_loss, response_logprobs

    model, _ = load_model(model_path, device=device)
    model.train()
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable({"use_reentrant": False})
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6, weight_decay=0.1)
    vocab = model.config.vocab_size
    gen = torch.Generator().manual_seed(0)
    print(f"\n### update: {sum(p.numel() for p in model.parameters()) / 1e6:.0f}M parameters, vocab {vocab}, "
          f"fp32 weights + AdamW, bf16 autocast, gradient checkpointing, prompt {prompt} tokens\n", flush=True)
    print("| micro-batch | response | peak memory (GiB) | tokens/s | seconds |\n| --- | --- | --- | --- | --- |")
    deadline, rate = time.time() + budget, None
    for mb in micro_sizes:
        for length in lengths:
            tokens = mb * (prompt + length)
            if rate and time.time() + tokens / rate > deadline:
                print(f"| {mb} | {length:,} | skipped (time) | | |", flush=True)
                continue
            seqs = [Episode(torch.randint(0, vocab, (prompt,), generator=gen).tolist(),
                            torch.randint(0, vocab, (length,), generator=gen).tolist(), adv=1.0) for _ in range(mb)]
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


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="/tmp/zppo_gpu_smoke", help="model and runs go here")
    parser.add_argument("--tiny", action="store_true", help="a tiny model instead of Qwen3.5-0.8B's shape")
    parser.add_argument("--cpu", action="store_true", help="no accelerate configs, no FSDP: python train.py")
    parser.add_argument("--skip-smoke", action="store_true", help="only the update table")
    parser.add_argument("--skip-table", action="store_true", help="only the smoke stages")
    parser.add_argument("--stage-timeout", type=int, default=300, help="seconds per smoke stage")
    parser.add_argument("--budget-s", type=float, default=240, help="seconds for the update table")
    parser.add_argument("--total-s", type=float, default=float("inf"), help="seconds for everything")
    parser.add_argument("--micro", default="1,4,8", help="micro-batch sizes of the table")
    parser.add_argument("--lengths", default="1024,4096,12288", help="response lengths of the table")
    args = parser.parse_args()
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
        update_table(model, device, budget, [int(x) for x in args.micro.split(",")],
                     [int(x) for x in args.lengths.split(",")])


if __name__ == "__main__":
    main()
