"""One update (spec step 10) on a fixed step batch, in one process or several (torch.distributed.run, gloo),
run by test_distributed.py to compare layouts: the same batch, plan and old log-probs through the project's
own preparation (train.prepare_student: FSDP2 shards, DDP, or neither) and update (zppo.old_logprobs,
zppo.ppo_update); the main process writes what is compared.

    python tests/dist_update.py MODEL OUT.json [--fsdp] [--images PNG ...] [--image-every N] [--bf16]
                                               [--skip-zero-adv] [--group-prompts] [--share]

OUT.json: the update's metrics, each weight's sum and sum of squares after it, the number of trainer passes
(forwards through logprobs.response_logprobs) of every rank, and the dtypes RoPE's inv_freq had inside the
forward passes.
--group-prompts: a group's 4 episodes answer one prompt (the same ids); --share: their responses share its
pass in the update (--share-prompts), where the model allows it (logprobs.shares_prompts).
"""
import argparse
import json
import os
import random
import sys
from types import SimpleNamespace

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, gather_object

import logprobs
import models
import rollout
import train
import zppo
from logprobs import unwrap
from zppo import Episode


def step_batch(tokenizer, images, every, group_prompts=False):
    """22 episodes of 3-14 response tokens in groups of 4 with nonzero advantages (and a few of A = 0), every
    `every`-th one with an image when `images` (paths) are given: the same on every rank. `group_prompts`: a
    group's episodes answer one prompt, as a step's rollouts do."""
    gen = random.Random(1)
    vocab = [i for i in range(40, 300)]
    eps = []
    for k in range(22):
        image = images[k % len(images)] if images and k % every == 0 else None
        text = f"question {k // 4 if group_prompts else k}"
        prompt = {"text": text, "images": [image]} if image else text
        ids, vision = rollout.encode_prompt(tokenizer, prompt)
        tokens = [gen.choice(vocab) for _ in range(3 + k % 12)]
        adv = 0.0 if k % 7 == 3 else gen.uniform(-1.5, 1.5)
        logprobs = [gen.uniform(-6, -1) for _ in tokens]
        eps.append(Episode(ids, tokens, 1.0, f"q{k // 4}/plain", "plain", adv, logprobs, vision))
    return eps


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("out")
    parser.add_argument("--fsdp", action="store_true")
    parser.add_argument("--images", nargs="*", default=[])
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--skip-zero-adv", action="store_true")
    parser.add_argument("--old-logprobs", default="all", choices=["all", "needed"])
    parser.add_argument("--image-every", type=int, default=3)
    parser.add_argument("--group-prompts", action="store_true")
    parser.add_argument("--share", action="store_true")
    args = parser.parse_args()

    cfg = SimpleNamespace(text_only=False, freeze_vision=False, image_min_pixels=32 * 32,
                          image_max_pixels=64 * 64, lr=1e-3, weight_decay=0.1, gradient_checkpointing=True,
                          fsdp=args.fsdp)
    ddp = DistributedDataParallelKwargs(find_unused_parameters=train.trains_vision(args.model, cfg)
                                        and not args.fsdp)
    acc = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision="bf16" if args.bf16 else "no",
                      kwargs_handlers=[ddp])
    torch.manual_seed(0)
    model, tokenizer, optimizer = train.prepare_student(cfg, args.model, acc, bool(args.images))
    eps = step_batch(tokenizer, args.images, args.image_every, args.group_prompts)
    share = args.share and logprobs.shares_prompts(model)

    passes, inv_freq = [0], set()
    counted = zppo.response_logprobs

    def counting(*a, **k):
        passes[0] += 1
        return counted(*a, **k)

    zppo.response_logprobs = counting
    for m in unwrap(model).modules():
        if hasattr(m, "inv_freq"):
            m.register_forward_hook(lambda mod, i, o: inv_freq.add(str(mod.inv_freq.dtype)))

    plan = zppo.plan_minibatches(eps, 3, random.Random(0), acc.process_index, acc.num_processes,
                                 args.skip_zero_adv, args.old_logprobs == "all", share)
    old, entropy, ran = zppo.old_logprobs(model, eps, plan, 1.0, 2, tokenizer.pad_token_id, acc, share)
    metrics, first = zppo.ppo_update(model, optimizer, acc, eps, plan, old, 1.0, 2, tokenizer.pad_token_id,
                                     share=share)
    metrics["tokens/forward"] = int(zppo.reduce_sum(acc, [ran])[0])
    metrics["shared"] = int(share)
    metrics["policy/entropy"] = zppo.mean_entropy(acc, entropy, first)
    weights = models.model_state(model, acc)
    counts = gather_object([passes[0]]) if acc.num_processes > 1 else passes
    names = {p: n for n, p in unwrap(model).named_parameters()}
    steps = {names[p]: int(s["step"]) for p, s in optimizer.state.items()}  # AdamW steps each one took
    if acc.is_main_process:
        with open(args.out, "w") as f:
            json.dump({"metrics": metrics, "passes": counts, "inv_freq": sorted(inv_freq), "steps": steps,
                       "weights": {k: [v.double().sum().item(), v.double().square().sum().item()]
                                   for k, v in sorted(weights.items())}}, f)
    train.end_training(SimpleNamespace(accelerator=acc, student=None, teacher=None))


if __name__ == "__main__":
    main()
