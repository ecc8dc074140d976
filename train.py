"""ZPPO training: RL post-training of a small student where a teacher helps only inside prompts.

    accelerate launch train.py --student Qwen3.5-0.8B --teacher Qwen3.5-27B   # GPU
    python demo.py                                                            # CPU, offline, ~15 min

One rollout step (numbers are the steps of ZPPO.md, the spec of the method):
 1. plain rollouts on new + replayed questions, binary reward
 2. hard questions: plain accuracy < tau
 4. pre-cap: hardest first, at most rho_aug * N_new
 3. teacher rollouts on those, keep the correct ones
 6. post-cap: BCQ (needs a correct teacher rollout) then NCQ per question, at most rho_aug * N_new
 5. build the BCQ / NCQ prompts from (compressed) candidates
 7. student rollouts on them, scored against the original gold answer
 8-9. plain, BCQ and NCQ of one question are three groups; REINFORCE++ advantages over the step
 10. I mini-batch updates of the PPO clip-higher / dual-clip loss, token-level mean, no KL
 11. buffer update from plain rollouts only
Every gradient token was sampled by the student: the teacher's text is only ever part of a prompt.
The paper's baselines (--algo grpo, hint, prefix, off_distill, on_distill) come from baselines.py, called
at commented points of the same loop.
"""
import importlib.util
import json
import math
import os
import random
import time
import warnings
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Literal, Optional

import torch
from accelerate import Accelerator, DistributedType
from tqdm import tqdm
from transformers import HfArgumentParser

from baselines import (DISTILLATION, PRESETS, TEACHER_GUIDED, check_algo, guided_metrics, guided_prompts,
                       jsd_update, off_distill_targets, shared_teacher)
from buffer import ReplayBuffer
from checkpoint import (find_checkpoint, load_checkpoint, load_optimizer_state, open_run, optimizer_state,
                        save_checkpoint, write_step)
from data import load_examples, take
from reformulate import postcap, precap, reformulated_prompts, with_closer
from reward import grade, score_nested
from rollout import ShardedEngine, TransformersEngine, VLLMEngine, frozen_engine, load_model, resolve_model_name
from zppo import Episode, compute_advantages, fill_old_logprobs, plan_minibatches, ppo_update, sync_check


def arg(default, help):
    return field(default=default, metadata={"help": help})


@dataclass
class Config:
    # models
    student: str = arg("Qwen3.5-0.8B", "a local path, a hub id, a bare Qwen name (-> Qwen/NAME) or a .gguf file")
    teacher: Optional[str] = arg(None, "teacher model (path or name), 'gold' (the data set's solutions), or none")
    teacher_url: Optional[str] = arg(None, "OpenAI-compatible server serving --teacher (e.g. http://host:8000)")
    teacher_timeout: float = arg(600.0, "seconds per teacher request (remote teacher)")
    teacher_retries: int = arg(3, "retries per teacher request after an error or timeout (remote teacher)")
    teacher_concurrency: int = arg(32, "teacher requests in flight (remote teacher)")
    teacher_engine: Literal["auto", "transformers", "vllm"] = arg("auto", "in-process teacher: auto = as --engine")
    teacher_gpu_memory_utilization: float = arg(0.4, "share of the GPU an in-process vLLM teacher may take")
    # data
    data: str = arg("openai/gsm8k", "'arithmetic' (generated), a .jsonl file, or a hub data set")
    data_config: Optional[str] = arg(None, "hub data set config name (openai/gsm8k: main)")
    data_limit: Optional[int] = arg(None, "use at most this many questions")
    # ZPPO (paper's Table 8)
    algo: Literal["zppo", "grpo", "hint", "prefix", "off_distill", "on_distill"] = arg(
        "zppo", "zppo, or one of the paper's baselines (baselines.py): grpo = --no-buffer --no-bcq --no-ncq; "
                "hint and prefix replay by default, grpo and the distillation ones do not (--buffer/--no-buffer)")
    buffer: bool = arg(True, "replay hard questions until they graduate")
    bcq: bool = arg(True, "binary-choice questions (teacher answer vs. student wrong answer)")
    ncq: bool = arg(True, "negative-candidate questions (the student's wrong answers, marked WRONG)")
    compress: bool = arg(True, "teacher compresses every candidate (a gold teacher never does)")
    adv_norm: Literal["without_zero", "with_zero", "none"] = arg("without_zero", "advantage step-2 normalisation")
    questions_per_step: int = arg(384, "N_new: new questions per rollout step")
    group_size: int = arg(8, "G_S: student rollouts per prompt")
    teacher_group_size: int = arg(4, "G_T: teacher rollouts per hard question")
    tau: float = arg(0.5, "hardness threshold on plain accuracy")
    rho_replay: float = arg(0.25, "replayed questions per step, as a fraction of N_new")
    rho_aug: float = arg(0.25, "cap on hard questions and on BCQ+NCQ instances, as a fraction of N_new")
    buffer_capacity: int = arg(10_000, "replay buffer capacity (FIFO eviction)")
    iters_per_step: int = arg(4, "I: optimizer steps (mini-batches) per rollout step")
    clip_low: float = arg(0.2, "PPO ratio clip below 1")
    clip_high: float = arg(0.28, "PPO ratio clip above 1 (clip-higher)")
    dual_clip: float = arg(10.0, "dual-clip ratio for negative advantages")
    candidate_max_chars: Optional[int] = arg(None, "truncate uncompressed candidates to this many characters")
    # baselines (baselines.py)
    hint_max_new_tokens: int = arg(512, "--algo hint: the teacher's hint cap (greedy)")
    prefix_frac: float = arg(0.4, "--algo prefix: fraction alpha of a correct teacher rollout's tokens given as "
                                  "the start of the student's answer")
    jsd_beta: float = arg(0.5, "distillation: beta of the generalized JSD (0.5 = symmetric) [our default: the "
                               "paper does not give it]")
    # sampling
    temperature: float = arg(1.0, "student and teacher sampling temperature")
    top_p: float = arg(1.0, "nucleus sampling")
    top_k: int = arg(0, "0 disables top-k")
    max_prompt_tokens: int = arg(4096, "questions whose plain prompt is longer are dropped")
    max_new_tokens: int = arg(12_288, "student response cap")
    teacher_max_new_tokens: int = arg(12_288, "teacher response cap")
    compress_max_new_tokens: int = arg(512, "compressed candidate cap")
    compress_temperature: float = arg(0.0, "compression sampling temperature (0 = greedy) [our default]")
    gen_batch_size: int = arg(64, "sequences per generate call (transformers engine)")
    engine: Literal["auto", "transformers", "vllm"] = arg("auto", "student rollouts: auto = vllm on GPU if installed")
    vllm_gpu_memory_utilization: float = arg(0.3, "share of the GPU the colocated vLLM engine may take")
    vllm_sleep: bool = arg(False, "release vLLM's memory between generations (one tight GPU)")
    vllm_max_model_len: Optional[int] = arg(None, "vLLM context length (default: the model's)")
    sync_warn: float = arg(0.1, "warn when engine and trainer log-probs differ by more (mean |diff| per token)")
    # optimisation
    lr: float = arg(1e-6, "AdamW learning rate (constant, no warmup)")
    weight_decay: float = arg(0.1, "AdamW weight decay")
    grad_clip: float = arg(1.0, "gradient-norm clip")
    micro_batch_size: int = arg(8, "sequences per forward/backward (gradient accumulation inside a mini-batch)")
    gradient_checkpointing: bool = arg(True, "recompute activations in backward: the paper's response lengths need "
                                             "it; --no-gradient-checkpointing trades memory for speed")
    skip_zero_adv: bool = arg(True, "skip the forward/backward of A = 0 sequences (same gradient, less compute)")
    mixed_precision: Optional[Literal["no", "bf16", "fp16"]] = arg(None, "update autocast; default: accelerate's")
    # run
    steps: int = arg(200, "rollout steps")
    seed: int = arg(0, "seed for data order, buffer sampling, tie-breaks and sampling")
    out_dir: str = arg("runs/zppo", "metrics.jsonl, config.json and checkpoints/ go here")
    save_every: int = arg(10, "checkpoint every N steps (and at the end); 0 = only at the end")
    keep_checkpoints: int = arg(2, "most recent checkpoints kept")
    resume: Optional[str] = arg(None, "continue a run: its out_dir or one of its checkpoints")
    report_to: str = arg("none", "accelerate trackers: none, all, tensorboard, wandb, ...")
    dump_reformulated: bool = arg(False, "write every BCQ/NCQ prompt with its rollouts to reformulated.jsonl")
    dump_rollouts: bool = arg(False, "write every rollout's group, reward, advantage and length to rollouts.jsonl")
    # evaluation (eval.py's protocol; free-form answers are judged by the teacher model)
    eval_benchmarks: Optional[str] = arg(None, "comma-separated eval.py benchmarks, every --eval-every steps and at the end")
    eval_every: int = arg(0, "0 = only at the end (when --eval-benchmarks is set)")
    eval_samples: int = arg(1, "k samples per question (avg@k)")
    eval_max_new_tokens: int = arg(12_288, "eval response cap")
    eval_limit: Optional[int] = arg(None, "first N questions of each benchmark")
    eval_data_dir: Optional[str] = arg(None, "folder of NAME.jsonl benchmark files, tried before the hub")


def parse_config(argv=None):
    parser = HfArgumentParser(Config)
    # presets become parser defaults, so any flag given explicitly still wins
    known, _ = parser.parse_known_args(argv)
    parser.set_defaults(**PRESETS.get(known.algo, {}))
    (cfg,) = parser.parse_args_into_dataclasses(args=argv)
    check_algo(cfg.algo, cfg.teacher, cfg.teacher_url, cfg.teacher_engine, cfg.bcq, cfg.ncq, cfg.jsd_beta,
               cfg.prefix_frac)
    if cfg.data == "openai/gsm8k" and cfg.data_config is None:
        cfg.data_config = "main"
    return cfg


def round_half_up(x):
    return int(math.floor(x + 0.5))


def mean(xs):
    xs = list(xs)
    return sum(xs) / len(xs) if xs else 0.0


@contextmanager
def timed(timer, key):
    """Adds the seconds spent inside the block to timer[key]."""
    start = time.time()
    yield
    timer[key] += time.time() - start


# ---------------------------------------------------------------------------------------------------------
# setup


def fsdp_wrap_classes(model):
    """The block classes FSDP wraps one unit each: those of the model's `_no_split_modules` that it has.
    Qwen3.5's list names its vision block for the text-only class too, and accelerate stops at a class
    it cannot find; wrapping whatever is listed and present works for text and vision-language models."""
    present = {type(m).__name__ for m in model.modules()}
    classes = sorted(c for c in (getattr(model, "_no_split_modules", None) or []) if c in present)
    if not classes:
        raise ValueError(f"FSDP: none of {type(model).__name__}'s _no_split_modules is in the model; "
                         "set fsdp_transformer_layer_cls_to_wrap in the accelerate config")
    return classes


def warn_slow_kernels(model, device):
    """Qwen3.5's linear-attention layers fall back to transformers' torch kernels (correct, several times
    slower) without flash-linear-attention and causal-conv1d; say so once, on GPU, with what to install."""
    layers = getattr(model.config.get_text_config(), "layer_types", None) or []
    missing = [pkg for mod, pkg in (("fla", "flash-linear-attention"), ("causal_conv1d", "causal-conv1d"))
               if importlib.util.find_spec(mod) is None]
    if device.type == "cuda" and "linear_attention" in layers and missing:
        warnings.warn(f"{type(model).__name__} trains on transformers' torch fallback kernels for linear attention "
                      f"(correct, slow): install {' and '.join(missing)} (see requirements-gpu.txt)")


@contextmanager
def oom_hint(cfg, seqs):
    """A CUDA out-of-memory error in the update, restated with the shapes that caused it and what to change."""
    try:
        yield
    except torch.OutOfMemoryError as e:
        longest = max((len(s.prompt_ids) + len(s.token_ids) for s in seqs), default=0)
        raise RuntimeError(
            f"out of GPU memory in the update: micro-batches of {cfg.micro_batch_size} sequences of up to "
            f"{longest} tokens (prompt + response); lower --micro-batch-size"
            + ("" if cfg.gradient_checkpointing else " or turn on --gradient-checkpointing")
            + " (no checkpoint was written for this step)") from e


def build_engines(cfg, accelerator, model, tokenizer, model_path):
    """The student's rollout engine and the teacher (None for 'gold' or none), sharded over processes."""
    if cfg.engine == "auto":
        on_gpu = accelerator.device.type == "cuda"
        cfg.engine = "vllm" if on_gpu and importlib.util.find_spec("vllm") else "transformers"
    if cfg.engine == "vllm":
        student = VLLMEngine(resolve_model_name(model_path), tokenizer, cfg.vllm_gpu_memory_utilization,
                             cfg.vllm_max_model_len, seed=cfg.seed + accelerator.process_index,
                             sleep=cfg.vllm_sleep)
    else:
        context = None
        if accelerator.distributed_type == DistributedType.FSDP:
            # generate() runs on the inner module: the root's own parameters (embeddings, head) are gathered
            # for it, and the root is initialised first (TRL's pattern); blocks gather their own
            from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

            @contextmanager
            def context():
                with FSDP.summon_full_params(model, recurse=False, writeback=False), accelerator.autocast():
                    yield
        student = TransformersEngine(accelerator.unwrap_model(model), tokenizer, max_batch_size=cfg.gen_batch_size,
                                     context=context)
    teacher = frozen_engine(
        None if cfg.teacher == "gold" else cfg.teacher, cfg.teacher_url,
        kind=cfg.engine if cfg.teacher_engine == "auto" else cfg.teacher_engine, device=accelerator.device,
        batch_size=cfg.gen_batch_size, timeout=cfg.teacher_timeout, retries=cfg.teacher_retries,
        concurrency=cfg.teacher_concurrency, gpu_memory_utilization=cfg.teacher_gpu_memory_utilization,
        seed=cfg.seed + accelerator.process_index)
    if accelerator.num_processes > 1:  # every rank generates its share of the prompts and sees all results
        student = ShardedEngine(student, accelerator)
        teacher = ShardedEngine(teacher, accelerator) if teacher is not None else None
    return student, teacher


def load_questions(cfg, tokenizer):
    """The training questions whose plain prompt fits --max-prompt-tokens."""
    examples = load_examples(cfg.data, limit=cfg.data_limit, seed=cfg.seed, config=cfg.data_config)
    lengths = [len(ids) for ids in tokenizer([with_closer(e["question"]) for e in examples])["input_ids"]]
    fits = [n <= cfg.max_prompt_tokens for n in lengths]
    if not all(fits):
        print(f"dropping {fits.count(False)} questions whose plain prompt exceeds {cfg.max_prompt_tokens} tokens")
    return [e for e, ok in zip(examples, fits) if ok]


# ---------------------------------------------------------------------------------------------------------
# the teacher: reached only through prompts


def score_groups(groups, examples, judge):
    """The binary reward of every rollout: rule grader, or the judge (the teacher) for free-form gold answers."""
    return score_nested([[r.text for r in g] for g in groups], examples, judge, grade)


def teacher_correct_rollouts(examples, teacher, cfg):
    """Spec step 3: G_T teacher rollouts per question on the plain prompt, correct ones kept.
    With --teacher gold the data set's worked solution stands in for the teacher's rollouts."""
    if cfg.teacher == "gold":
        texts = [[ex["solution"]] if ex.get("solution") else [] for ex in examples]
    elif teacher is not None and examples:
        groups = teacher.generate([with_closer(ex["question"]) for ex in examples], n=cfg.teacher_group_size,
                                  max_new_tokens=cfg.teacher_max_new_tokens, temperature=cfg.temperature,
                                  top_p=cfg.top_p, top_k=cfg.top_k)
        texts = [[r.text for r in g] for g in groups]
    else:
        texts = [[] for _ in examples]
    scores = score_nested(texts, examples, teacher, grade)
    return [[t for t, ok in zip(ts, ss) if ok] for ts, ss in zip(texts, scores)]


# ---------------------------------------------------------------------------------------------------------
# bookkeeping


def step_metrics(seqs, questions, n_new, plain, reform, acc, hard, chosen, teacher_ok, buffer, cfg):
    """The per-step numbers the paper's analyses need (ZPPO.md, "What to log per step")."""
    groups = defaultdict(list)
    for s in seqs:
        groups[s.group].append(s.reward)
    rewards = lambda kind: [s.reward for s in seqs if s.kind == kind]  # noqa: E731
    lengths = lambda rolls: [len(r.token_ids) for g in rolls for r in g]  # noqa: E731
    metrics = {
        "acc/plain": mean(rewards("plain")), "acc/plain_new": mean(acc[:n_new]), "acc/replay": mean(acc[n_new:]),
        "acc/bcq": mean(rewards("bcq")), "acc/ncq": mean(rewards("ncq")),
        "count/questions": len(questions), "count/replayed": len(questions) - n_new, "count/hard": len(hard),
        "count/bcq": sum(k == "bcq" for _, k in chosen), "count/ncq": sum(k == "ncq" for _, k in chosen),
        "count/no_teacher_correct": sum(not ok for ok in teacher_ok.values())
        if cfg.bcq or cfg.algo in TEACHER_GUIDED else 0,
        "adv/positive_frac": mean(s.adv > 0 for s in seqs),
        "groups/trivial_frac": mean(max(rs) == min(rs) for rs in groups.values()),
        "buffer/size": len(buffer), "len/plain": mean(lengths(plain)), "len/reformulated": mean(lengths(reform)),
        "len/clipped_frac": mean(r.finish_reason == "length" for g in plain + reform for r in g),
    }
    if cfg.buffer:
        metrics.update({f"buffer/graduated_total_from_{k}": v for k, v in buffer.graduated_by_bin.items()})
        metrics.update({f"buffer/admitted_total_at_{k}": v for k, v in buffer.admitted_by_bin.items()})
    return metrics


def periodic_eval(student, teacher, cfg, step, log):
    """eval.py's benchmarks every --eval-every steps and at the end; the teacher judges free-form answers."""
    if not cfg.eval_benchmarks or not ((cfg.eval_every and step % cfg.eval_every == 0) or step == cfg.steps):
        return {}
    from eval import run_benchmarks  # only here: training itself never depends on eval.py

    summary = run_benchmarks(student, cfg.eval_benchmarks.split(","), cfg.eval_samples, cfg.eval_max_new_tokens,
                             judge=teacher, data_dir=cfg.eval_data_dir, limit=cfg.eval_limit, log=log)
    metrics = {f"eval/{name}": r["accuracy"] for name, r in summary["benchmarks"].items()}
    metrics.update({f"eval/macro_{fam}": acc for fam, acc in summary["macro"].items()})
    log(f"step {step}: " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
    return metrics


def weight_checksum_spread(model, accelerator):
    """DDP/FSDP keep the ranks identical; check it, cheaply: max - min over ranks of the sum of all weights."""
    checksum = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum().reshape(1)
    sums = accelerator.gather(checksum)
    return (sums.max() - sums.min()).item()


# ---------------------------------------------------------------------------------------------------------
# the loop


def main(cfg):
    accelerator = Accelerator(log_with=None if cfg.report_to == "none" else cfg.report_to, project_dir=cfg.out_dir,
                              mixed_precision=cfg.mixed_precision)
    rng = random.Random(cfg.seed)
    torch.manual_seed(cfg.seed)
    os.makedirs(cfg.out_dir, exist_ok=True)
    ckpt = find_checkpoint(cfg.resume) if cfg.resume else None
    model, tokenizer = load_model(ckpt or cfg.student)
    model.to(accelerator.device).train()
    warn_slow_kernels(model, accelerator.device)
    if accelerator.distributed_type == DistributedType.FSDP:
        model._no_split_modules = fsdp_wrap_classes(model)
    if cfg.gradient_checkpointing:  # only in training mode: the no-grad passes run in eval mode, unaffected
        enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
        enable({"use_reentrant": False})  # (transformers >= 5.24 renamed it)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8,
                                  weight_decay=cfg.weight_decay)
    model, optimizer = accelerator.prepare(model, optimizer)
    student, teacher = build_engines(cfg, accelerator, model, tokenizer, ckpt or cfg.student)
    teacher_model = shared_teacher(teacher, tokenizer, model) if cfg.algo in DISTILLATION else None
    examples = load_questions(cfg, tokenizer)
    buffer = ReplayBuffer(cfg.buffer_capacity)
    start, data_pos = 0, (0, 0)
    if ckpt:
        start, data_pos, optim = load_checkpoint(ckpt, rng, buffer)
        load_optimizer_state(model, optimizer, optim, accelerator)
        print(f"resumed from {ckpt} at step {start}")
    log_path = open_run(cfg, start, accelerator)
    n_new, cap = cfg.questions_per_step, round_half_up(cfg.rho_aug * cfg.questions_per_step)
    sample = dict(n=cfg.group_size, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                  top_p=cfg.top_p, top_k=cfg.top_k)
    teacher_sample = {**sample, "n": cfg.teacher_group_size, "max_new_tokens": cfg.teacher_max_new_tokens}
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="zppo",
               disable=not accelerator.is_main_process)
    for step in bar:
        t_step, timer, metrics = time.time(), defaultdict(float), {}
        teacher_failures = getattr(teacher, "failures", 0)

        # 1. plain rollouts on new questions + replayed hard ones, binary reward
        new, *data_pos = take(examples, n_new, cfg.seed, *data_pos)
        n_replay = round_half_up(cfg.rho_replay * n_new) if cfg.buffer else 0
        replay = buffer.sample(n_replay, rng, exclude={ex["id"] for ex in new})
        questions = new + replay
        with timed(timer, "rollout"):
            plain = student.generate([with_closer(ex["question"]) for ex in questions], **sample)
        with timed(timer, "score"):
            plain_rewards = score_groups(plain, questions, teacher)
        acc = [sum(rewards) / len(rewards) for rewards in plain_rewards]

        # 2. hard questions; 4. pre-cap, hardest first (also the Hint and Prefix baselines' questions)
        hard = [i for i, a in enumerate(acc) if a < cfg.tau]
        guided = cfg.bcq or cfg.algo in TEACHER_GUIDED  # needs correct teacher rollouts of the kept questions
        kept = precap(acc, hard, cap, rng) if (guided or cfg.ncq) else []

        # 3. teacher rollouts on the kept hard questions, only the correct ones kept (never cached)
        with timed(timer, "teacher"):
            correct = teacher_correct_rollouts([questions[i] for i in kept], teacher, cfg) if guided else []
        teacher_correct = dict(zip(kept, correct))
        teacher_ok = {i: bool(teacher_correct.get(i)) for i in kept}

        # 6. post-cap: BCQ then NCQ per question, hardest first, at most rho_aug * N_new instances
        chosen = postcap(kept, teacher_ok, cap, cfg.bcq, cfg.ncq)

        # 5. BCQ / NCQ prompts from compressed candidates
        with timed(timer, "compress"):
            wrong = {i: [r.text for r, x in zip(plain[i], plain_rewards[i]) if x == 0] for i, _ in chosen}
            compress = teacher if cfg.compress else None
            prompts = reformulated_prompts(
                chosen, [q["question"] for q in questions], wrong, teacher_correct, rng, compress,
                cfg.candidate_max_chars, max_new_tokens=cfg.compress_max_new_tokens,
                temperature=cfg.compress_temperature, top_p=cfg.top_p, top_k=cfg.top_k)

        # Hint / Prefix in place of 5-6: per kept question with a correct teacher rollout, a hint or a prefix
        hints, prefixes = [], None
        if cfg.algo in TEACHER_GUIDED:
            with timed(timer, "teacher"):
                chosen, prompts, hints, prefixes = guided_prompts(cfg.algo, kept, teacher_correct, questions, rng,
                                                                  teacher, cfg.hint_max_new_tokens, tokenizer,
                                                                  cfg.prefix_frac)

        # 7. student rollouts on the reformulated prompts, scored against the original gold answer
        with timed(timer, "rollout"):
            reform = student.generate([with_closer(p) for p in prompts], **sample,
                                      response_prefixes=prefixes) if prompts else []
        with timed(timer, "score"):
            reform_rewards = score_groups(reform, [questions[i] for i, _ in chosen], teacher)

        # 8. plain, BCQ and NCQ of one question are three groups; 9. advantages over the whole step batch
        tags = [(i, "plain") for i in range(len(questions))] + chosen
        seqs = [Episode(r.prompt_ids, r.token_ids, reward, f"{questions[i]['id']}/{kind}", kind, r.logprobs)
                for group, rewards, (i, kind) in zip(plain + reform, plain_rewards + reform_rewards, tags)
                for r, reward in zip(group, rewards)]
        advantages = compute_advantages([s.reward for s in seqs], [s.group for s in seqs], norm=cfg.adv_norm)
        for s, a in zip(seqs, advantages.tolist()):
            s.adv = a

        # Off-Distill: G_T teacher rollouts on every question, the correct ones are the distillation targets
        targets, teacher_counts = seqs, {}  # On-Distill distils along the student's own rollouts
        if cfg.algo == "off_distill":
            with timed(timer, "teacher"):
                targets, teacher_counts = off_distill_targets(questions, plain, teacher, grade, **teacher_sample)

        # 10. I mini-batch updates; old log-probs are those of the policy that sampled. The distillation
        #     baselines take one step on the token mean of the JSD to the teacher instead
        with timed(timer, "update"), oom_hint(cfg, targets):
            if cfg.algo in DISTILLATION:
                metrics.update(jsd_update(model, teacher_model, optimizer, accelerator, targets, cfg.temperature,
                                          cfg.micro_batch_size, tokenizer.pad_token_id, cfg.jsd_beta,
                                          cfg.grad_clip))
            else:
                iters = plan_minibatches(seqs, cfg.iters_per_step, rng, accelerator.process_index,
                                         accelerator.num_processes, cfg.skip_zero_adv)
                metrics["policy/entropy"] = fill_old_logprobs(model, seqs, cfg.temperature, cfg.micro_batch_size,
                                                              tokenizer.pad_token_id, accelerator)
                metrics["sync/logprob_abs_diff"] = sync_check(seqs, cfg.sync_warn, step + 1, accelerator)
                metrics.update(ppo_update(model, optimizer, accelerator, seqs, iters, cfg.temperature,
                                          cfg.micro_batch_size, tokenizer.pad_token_id, cfg.clip_low,
                                          cfg.clip_high, cfg.dual_clip, cfg.grad_clip))
            # the engine samples the next step from the updated weights (gathered in full under FSDP)
            student.sync_weights(accelerator.unwrap_model(model),
                                 accelerator.get_state_dict(model) if cfg.engine == "vllm" else None)

        # 11. buffer update from plain rollouts only
        if cfg.buffer:
            results = [(ex, int(sum(rewards)), len(rewards)) for ex, rewards in zip(questions, plain_rewards)]
            moves = buffer.update(results, cfg.tau)
            metrics.update({f"buffer/{k}": v for k, v in moves.items()})

        # bookkeeping: metrics, optional eval, dumps, checkpoint
        metrics.update(step_metrics(seqs, questions, len(new), plain, reform, acc, hard, chosen, teacher_ok,
                                    buffer, cfg))
        metrics.update({**guided_metrics(cfg.algo, seqs, chosen, questions, hints, prefixes), **teacher_counts})
        metrics["count/teacher_failed"] = getattr(teacher, "failures", 0) - teacher_failures
        metrics.update({f"time/{k}": v for k, v in timer.items()}, **{"time/step": time.time() - t_step})
        metrics.update(periodic_eval(student, teacher, cfg, step + 1, bar.write))
        if accelerator.num_processes > 1:
            metrics["dist/weight_checksum_spread"] = weight_checksum_spread(model, accelerator)
        write_step(cfg, step + 1, metrics, seqs, chosen, questions, prompts, reform, log_path, accelerator)
        bar.set_postfix(acc=f"{metrics['acc/plain']:.2f}", bcq=f"{metrics['acc/bcq']:.2f}",
                        ncq=f"{metrics['acc/ncq']:.2f}", buf=len(buffer), t=f"{metrics['time/step']:.0f}s")
        if (cfg.save_every and (step + 1) % cfg.save_every == 0) or step + 1 == cfg.steps:
            # both collective under FSDP: every rank takes part, the main process writes
            full, optim = accelerator.get_state_dict(model), optimizer_state(model, optimizer, accelerator)
            if accelerator.is_main_process:
                save_checkpoint(cfg, step + 1, model, full, tokenizer, optim, buffer, tuple(data_pos), rng,
                                accelerator)
            accelerator.wait_for_everyone()
    accelerator.end_training()
    return log_path


if __name__ == "__main__":
    main(parse_config())
