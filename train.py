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
import math
import os
import random
import time
import warnings
from collections import defaultdict
from contextlib import contextmanager

import torch
from accelerate import Accelerator, DistributedType
from tqdm import tqdm

from baselines import (DISTILLATION, TEACHER_GUIDED, guided_metrics, guided_prompts, jsd_update, off_distill_targets,
                       off_distill_weights, shared_teacher)
from buffer import ReplayBuffer
from checkpoint import (add_to_step, clear_run, config_changes, find_checkpoint, load_checkpoint,
                        load_optimizer_state, open_run, optimizer_state, release_lock, resume_problems, save_checkpoint,
                        take_lock, write_step)
from config import Config, parse_config, validate  # noqa: F401 (train.Config for scripts)
from data import load_examples, take
from reformulate import postcap, precap, reformulated_prompts, user_prompt, with_closer
from reward import grade, score_rollouts
from rollout import (Rollout, ShardedEngine, TransformersEngine, VLLMEngine, encode_prompt, frozen_engine,
                     load_model, pick_engine, resolve_model_name, vllm_dtype)
from zppo import (Episode, compute_advantages, fill_old_logprobs, plan_minibatches, ppo_update, reduce_sum,
                  sync_check)


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


def checkpointing(model, on):
    """Gradient (activation) checkpointing of a transformers model on or off (transformers >= 5.24 renamed it)."""
    if on:
        enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
        enable({"use_reentrant": False})
    else:
        (getattr(model, "activation_checkpointing_disable", None) or model.gradient_checkpointing_disable)()


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


def prepare_student(cfg, path, accelerator):
    """The student (text or vision-language class), its tokenizer, and AdamW over its trainable parameters,
    wrapped by accelerate (DDP, FSDP, autocast) with gradient checkpointing as asked."""
    model, tokenizer = load_model(path, text_only=cfg.text_only, pixels=(cfg.image_min_pixels, cfg.image_max_pixels),
                                  role="student")
    if cfg.freeze_vision:
        for name, p in model.named_parameters():
            p.requires_grad_(p.requires_grad and "visual" not in name)
    model.to(accelerator.device).train()
    warn_slow_kernels(model, accelerator.device)
    if accelerator.distributed_type == DistributedType.FSDP:
        model._no_split_modules = fsdp_wrap_classes(model)
    if cfg.gradient_checkpointing:  # only in training mode: the no-grad passes run in eval mode, unaffected
        checkpointing(model, True)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                                  betas=(0.9, 0.999), eps=1e-8, weight_decay=cfg.weight_decay)
    model, optimizer = accelerator.prepare(model, optimizer)
    return model, tokenizer, optimizer


def build_engines(cfg, accelerator, model, tokenizer, model_path):
    """The student's rollout engine and the teacher (None for 'gold' or none), sharded over processes."""
    cfg.engine = pick_engine(cfg.engine, accelerator.device)
    dtype = vllm_dtype(cfg.vllm_dtype, accelerator.device)
    if cfg.engine == "vllm":
        student = VLLMEngine(resolve_model_name(model_path), tokenizer, cfg.vllm_gpu_memory_utilization,
                             cfg.vllm_max_model_len, seed=cfg.seed + accelerator.process_index,
                             sleep=cfg.vllm_sleep, dtype=dtype,
                             pixels=(cfg.image_min_pixels, cfg.image_max_pixels))
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
    try:
        teacher = frozen_engine(
            None if cfg.teacher == "gold" else cfg.teacher, cfg.teacher_url,
            kind=cfg.engine if cfg.teacher_engine == "auto" else cfg.teacher_engine, device=accelerator.device,
            batch_size=cfg.gen_batch_size, timeout=cfg.teacher_timeout, retries=cfg.teacher_retries,
            concurrency=cfg.teacher_concurrency, gpu_memory_utilization=cfg.teacher_gpu_memory_utilization,
            seed=cfg.seed + accelerator.process_index, dtype=dtype)
    except OSError as e:  # a path that does not exist, an unreachable hub id: say it is the teacher
        raise OSError(f"the teacher (--teacher {cfg.teacher}): {e}") from e
    if accelerator.num_processes > 1:  # every rank generates its share of the prompts and sees all results
        student = ShardedEngine(student, accelerator)
        teacher = ShardedEngine(teacher, accelerator) if teacher is not None else None
    return student, teacher


def engine_weights(model, accelerator):
    """The whole model's weights on every rank, for that rank's own vLLM engine. Under FSDP accelerate's
    get_state_dict gathers them on the main process only (rank0_only), which would leave every other rank's
    engine without weights: here each rank gets the full state dict (in CPU memory)."""
    if accelerator.distributed_type != DistributedType.FSDP:
        return accelerator.get_state_dict(model)
    from torch.distributed.fsdp import FullStateDictConfig, StateDictType
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    with FSDP.state_dict_type(model, StateDictType.FULL_STATE_DICT,
                              FullStateDictConfig(offload_to_cpu=True, rank0_only=False)):
        return model.state_dict()


def load_data(cfg):
    """The training questions, before any model loads: every bad row named by file and line, ids unique,
    enough questions for one step."""
    examples = load_examples(cfg.data, limit=cfg.data_limit, seed=cfg.seed, config=cfg.data_config,
                             dedup_ids=cfg.dedup_ids)
    if cfg.questions_per_step > len(examples):
        raise SystemExit(f"--questions-per-step {cfg.questions_per_step} is more than the {len(examples)} "
                         f"questions of {cfg.data}: a step would hold a question twice")
    return examples


def fit_prompts(cfg, examples, tokenizer):
    """The questions whose plain prompt fits --max-prompt-tokens; at least one step's worth, else SystemExit."""
    if any(e.get("images") for e in examples) and not hasattr(tokenizer, "image_processor"):
        raise ValueError(f"{cfg.data} has images but the student is a text model: use a vision-language "
                         "checkpoint" + (" without --text-only" if cfg.text_only else ""))
    # counted as the student sees it: chat template, closer and image tokens
    lengths = [len(encode_prompt(tokenizer, user_prompt(e, with_closer(e["question"])))[0]) for e in examples]
    kept = [e for e, n in zip(examples, lengths) if n <= cfg.max_prompt_tokens]
    if len(kept) < len(examples):
        print(f"dropping {len(examples) - len(kept)} questions whose plain prompt exceeds {cfg.max_prompt_tokens} "
              "tokens")
    if not kept:
        raise SystemExit(f"none of the {len(examples)} questions of {cfg.data} fits --max-prompt-tokens "
                         f"{cfg.max_prompt_tokens}: the shortest plain prompt has {min(lengths)} tokens")
    if cfg.questions_per_step > len(kept):
        raise SystemExit(f"--questions-per-step {cfg.questions_per_step} is more than the {len(kept)} questions "
                         f"of {cfg.data} that fit --max-prompt-tokens {cfg.max_prompt_tokens}: a step would hold "
                         "a question twice")
    return kept


# ---------------------------------------------------------------------------------------------------------
# the teacher: reached only through prompts


def score_groups(groups, examples, judge):
    """The binary reward of every rollout: rule grader, or the judge (the teacher) for what the rule cannot
    resolve (free-form gold answers, no parseable box, a truncated response whose last box is wrong)."""
    return score_rollouts(groups, examples, judge, grade)


def teacher_correct_rollouts(examples, teacher, cfg):
    """Spec step 3: G_T teacher rollouts per question on the plain prompt, the correct ones kept (Rollouts).
    With --teacher gold the data set's worked solution stands in for the teacher's rollouts (text, no tokens)."""
    if cfg.teacher == "gold":
        groups = [[Rollout(ex["solution"], [], [])] if ex.get("solution") else [] for ex in examples]
    elif teacher is not None and examples:
        groups = teacher.generate([user_prompt(ex, with_closer(ex["question"])) for ex in examples],
                                  n=cfg.teacher_group_size,
                                  max_new_tokens=cfg.teacher_max_new_tokens, temperature=cfg.temperature,
                                  top_p=cfg.top_p, top_k=cfg.top_k)
    else:
        groups = [[] for _ in examples]
    scores = score_rollouts(groups, examples, teacher, grade)
    return [[r for r, ok in zip(g, ss) if ok] for g, ss in zip(groups, scores)]


# ---------------------------------------------------------------------------------------------------------
# bookkeeping


def step_metrics(seqs, questions, n_new, plain, reform, acc, hard, chosen, teacher_ok, buffer, cfg):
    """The per-step numbers the paper's analyses need (ZPPO.md, "What to log per step")."""
    groups = defaultdict(list)
    for s in seqs:
        groups[s.group].append(s.reward)
    rewards = lambda kind: [s.reward for s in seqs if s.kind == kind]  # noqa: E731
    zero = {q["id"] for q, a in zip(questions, acc) if a == 0}
    zero_groups = [g for g in groups if g.rsplit("/", 1)[0] in zero and not g.endswith("/plain")]
    lengths = lambda rolls: [len(r.token_ids) for g in rolls for r in g]  # noqa: E731
    metrics = {
        "acc/plain": mean(rewards("plain")), "acc/plain_new": mean(acc[:n_new]), "acc/replay": mean(acc[n_new:]),
        "acc/bcq": mean(rewards("bcq")), "acc/ncq": mean(rewards("ncq")),
        "count/questions": len(questions), "count/replayed": len(questions) - n_new, "count/hard": len(hard),
        "count/bcq": sum(k == "bcq" for _, k in chosen), "count/ncq": sum(k == "ncq" for _, k in chosen),
        # the mechanism: all-wrong plain groups give GRPO no gradient; a BCQ/NCQ group of such a question with a
        # correct rollout has nonzero advantages (count/zero_solved), a signal plain sampling did not have
        "count/plain_zero": len(zero), "count/zero_reformulated": len(zero_groups),
        "count/zero_solved": sum(max(groups[g]) > 0 for g in zero_groups),
        "count/bcq_zero": sum(g.endswith("/bcq") for g in zero_groups),
        "acc/bcq_zero": mean(r for g in zero_groups if g.endswith("/bcq") for r in groups[g]),
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
    """eval.py's benchmarks every --eval-every steps and at the end; the teacher judges free-form answers.
    It runs after the step's checkpoint is saved, and its sampling draws on a forked random state, so a run
    resumes exactly whether or not it evaluates. A failure is reported (eval/failed) and training goes on."""
    if not cfg.eval_benchmarks or not ((cfg.eval_every and step % cfg.eval_every == 0) or step == cfg.steps):
        return {}
    try:
        from eval import run_benchmarks  # only here: training itself never depends on eval.py

        with torch.random.fork_rng(devices=[torch.cuda.current_device()] if torch.cuda.is_available() else []):
            summary = run_benchmarks(student, cfg.eval_benchmarks.split(","), cfg.eval_samples,
                                     cfg.eval_max_new_tokens, judge=teacher, data_dir=cfg.eval_data_dir,
                                     limit=cfg.eval_limit, log=log)
        metrics = {f"eval/{name}": r["accuracy"] for name, r in summary["benchmarks"].items()}
        metrics.update({f"eval/macro_{fam}": acc for fam, acc in summary["macro"].items()})
        for name, r in summary["benchmarks"].items():  # judge calls that failed were scored 0: a lower bound
            if r.get("judge_failed"):
                metrics[f"eval/{name}_judge_failed"] = r["judge_failed"]
        if summary["errors"]:  # run_benchmarks reports a benchmark that failed (a bad file line) instead of raising
            log(f"step {step}: evaluation of {', '.join(summary['errors'])} failed; training goes on")
            metrics["eval/failed"] = 1.0
    except Exception as e:  # an evaluation costs its own numbers at most, never the run
        log(f"step {step}: evaluation failed ({type(e).__name__}: {e}); training goes on")
        return {"eval/failed": 1.0}
    log(f"step {step}: " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
    return metrics


def weight_checksum_spread(model, accelerator):
    """DDP/FSDP keep the ranks identical; check it, cheaply: max - min over ranks of the sum of all weights."""
    checksum = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum().reshape(1)
    sums = accelerator.gather(checksum)
    return (sums.max() - sums.min()).item()


def save(cfg, step, model, tokenizer, optimizer, buffer, data_pos, rng, accelerator):
    """The step's checkpoint, never of non-finite weights: those stop the run and the last checkpoint stays
    the one `latest` names. Every rank checks its own parameters (its shard under FSDP) and all agree."""
    bad = [name for name, p in model.named_parameters() if not torch.isfinite(p).all()]
    if reduce_sum(accelerator, [len(bad)])[0]:
        raise SystemExit(f"step {step}: weights hold NaN or inf ({', '.join(bad[:3]) or 'on another rank'}"
                         f"{', ...' if len(bad) > 3 else ''}); no checkpoint written, {cfg.out_dir}/latest still "
                         "names the last good one")
    # both collective under FSDP: every rank takes part (the optimizer's shards are gathered), the main one writes
    full, optim = accelerator.get_state_dict(model), optimizer_state(model, optimizer, accelerator)
    if accelerator.is_main_process:
        save_checkpoint(cfg, step, model, full, tokenizer, optim, buffer, tuple(data_pos), rng, accelerator)
    accelerator.wait_for_everyone()


def resume_from(cfg, ckpt, model, optimizer, rng, buffer, accelerator):
    """Restore the checkpoint's state; say which flags differ from its run's, and apply --lr and
    --weight-decay to the restored optimizer (loading it brings back the values it was saved with)."""
    changes = config_changes(cfg, ckpt)
    if changes:
        warnings.warn(f"--resume: flags differ from the run that wrote {ckpt}: {', '.join(changes)}")
    start, data_pos, optim = load_checkpoint(ckpt, rng, buffer)
    if buffer.capacity != cfg.buffer_capacity:  # applied, not only listed: the restored capacity would win
        print(f"--buffer-capacity {cfg.buffer_capacity} replaces the restored buffer's {buffer.capacity} "
              f"({max(0, len(buffer) - cfg.buffer_capacity)} of its {len(buffer)} questions evicted, oldest first)")
        buffer.capacity = cfg.buffer_capacity
        buffer.update([], cfg.tau)  # evicts down to the new capacity (FIFO), counted in the buffer's totals
    load_optimizer_state(model, optimizer, optim, accelerator)
    for key in ("lr", "weight_decay"):
        restored = {group[key] for group in optimizer.param_groups}
        if restored != {getattr(cfg, key)}:
            print(f"--{key.replace('_', '-')} {getattr(cfg, key)} replaces the restored optimizer's "
                  f"{', '.join(map(str, sorted(restored)))}")
            for group in optimizer.param_groups:
                group[key] = getattr(cfg, key)
    print(f"resumed from {ckpt} at step {start}")
    return start, data_pos


# ---------------------------------------------------------------------------------------------------------
# the loop


def main(cfg):
    validate(cfg)  # flags, the output folder, then the data: all before any model loads
    # one process writes a run folder: the main process holds OUT/lock until it exits, however it exits
    lock = take_lock(cfg.out_dir) if os.environ.get("RANK", "0") == "0" else None
    try:
        return train_run(cfg)
    finally:
        release_lock(lock)


def train_run(cfg):
    examples = load_data(cfg)
    if cfg.teacher == "gold" and (cfg.bcq or cfg.algo in TEACHER_GUIDED):  # the solutions are the teacher
        without = sum(not ex.get("solution") for ex in examples)
        if without == len(examples):
            raise SystemExit(f"--teacher gold: no question of {cfg.data} has a `solution` field, so no question "
                             "would ever get a correct teacher answer (no BCQ, no hint or prefix); add worked "
                             "solutions, use a teacher model, or --no-bcq")
        if without:
            warnings.warn(f"--teacher gold: {without} of the {len(examples)} questions of {cfg.data} have no "
                          "`solution`: those never get a correct teacher answer (no BCQ)")
    ckpt = find_checkpoint(cfg.resume) if cfg.resume else None
    problems = resume_problems(cfg, ckpt) if ckpt else []
    if problems:  # before anything loads, and before config.json is rewritten
        raise SystemExit("train.py: cannot resume:\n  " + "\n  ".join(problems))
    accelerator = Accelerator(log_with=None if cfg.report_to == "none" else cfg.report_to, project_dir=cfg.out_dir,
                              mixed_precision=cfg.mixed_precision)
    if cfg.overwrite and accelerator.is_main_process and os.path.isdir(cfg.out_dir):
        clear_run(cfg.out_dir)
    accelerator.wait_for_everyone()
    rng = random.Random(cfg.seed)
    torch.manual_seed(cfg.seed)
    os.makedirs(cfg.out_dir, exist_ok=True)
    model, tokenizer, optimizer = prepare_student(cfg, ckpt or cfg.student, accelerator)
    examples = fit_prompts(cfg, examples, tokenizer)
    student, teacher = build_engines(cfg, accelerator, model, tokenizer, ckpt or cfg.student)
    teacher_model = shared_teacher(teacher, tokenizer, model) if cfg.algo in DISTILLATION else None
    # Prefix cuts the teacher's own tokens: they are the student's ids unless the teacher has another vocabulary
    teacher_tokenizer = getattr(teacher, "tokenizer", None) if cfg.algo == "prefix" else None
    if teacher_tokenizer is not None and teacher_tokenizer.get_vocab() == tokenizer.get_vocab():
        teacher_tokenizer = None
    buffer = ReplayBuffer(cfg.buffer_capacity)
    start, data_pos = resume_from(cfg, ckpt, model, optimizer, rng, buffer, accelerator) if ckpt else (0, (0, 0))
    log_path = open_run(cfg, start, accelerator, ckpt)
    n_new, cap = cfg.questions_per_step, round_half_up(cfg.rho_aug * cfg.questions_per_step)
    sample = dict(n=cfg.group_size, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                  top_p=cfg.top_p, top_k=cfg.top_k)
    nonfinite_steps = 0  # rollout steps in a row whose update skipped a non-finite mini-batch
    teacher_sample = {**sample, "n": cfg.teacher_group_size, "max_new_tokens": cfg.teacher_max_new_tokens}
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc=cfg.algo,
               disable=not accelerator.is_main_process)
    for step in bar:
        t_step, timer, metrics = time.time(), defaultdict(float), {}
        teacher_failures, teacher_prompts = getattr(teacher, "failures", 0), getattr(teacher, "prompts", 0)

        # 1. plain rollouts on new questions + replayed hard ones, binary reward
        new, *data_pos = take(examples, n_new, cfg.seed, *data_pos)
        metrics["data/epoch"] = data_pos[0]  # the pass over the data this step's new questions come from
        n_replay = round_half_up(cfg.rho_replay * n_new) if cfg.buffer else 0
        replay = buffer.sample(n_replay, rng, exclude={ex["id"] for ex in new})
        questions = new + replay
        with timed(timer, "rollout"):
            plain = student.generate([user_prompt(ex, with_closer(ex["question"])) for ex in questions], **sample)
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
        teacher_rollouts = dict(zip(kept, correct))
        teacher_correct = {i: [r.text for r in rs] for i, rs in teacher_rollouts.items()}
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
                chosen, prompts, hints, prefixes = guided_prompts(cfg.algo, kept, teacher_rollouts, questions, rng,
                                                                  teacher, cfg.hint_max_new_tokens, tokenizer,
                                                                  cfg.prefix_frac, teacher_tokenizer)

        # 7. student rollouts on the reformulated prompts, scored against the original gold answer
        with timed(timer, "rollout"):
            reform_prompts = [user_prompt(questions[i], with_closer(p)) for (i, _), p in zip(chosen, prompts)]
            reform = student.generate(reform_prompts, **sample, response_prefixes=prefixes) if prompts else []
        with timed(timer, "score"):
            reform_rewards = score_groups(reform, [questions[i] for i, _ in chosen], teacher)

        # 8. plain, BCQ and NCQ of one question are three groups; 9. advantages over the whole step batch
        tags = [(i, "plain") for i in range(len(questions))] + chosen
        seqs = [Episode(r.prompt_ids, r.token_ids, reward, f"{questions[i]['id']}/{kind}", kind, r.logprobs,
                        vision=r.vision)
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
        #     baselines take one step on the JSD to the teacher instead (Off-Distill: a mean over questions)
        with timed(timer, "update"), oom_hint(cfg, targets):
            if cfg.algo in DISTILLATION:
                weights = off_distill_weights(targets, cfg.off_distill_mean) if cfg.algo == "off_distill" else None
                metrics.update(jsd_update(model, teacher_model, optimizer, accelerator, targets, cfg.temperature,
                                          cfg.micro_batch_size, tokenizer.pad_token_id, cfg.jsd_beta,
                                          cfg.grad_clip, weights))
            else:
                iters = plan_minibatches(seqs, cfg.iters_per_step, rng, accelerator.process_index,
                                         accelerator.num_processes, cfg.skip_zero_adv)
                metrics["policy/entropy"] = fill_old_logprobs(model, seqs, cfg.temperature, cfg.micro_batch_size,
                                                              tokenizer.pad_token_id, accelerator)
                metrics["sync/logprob_abs_diff"] = sync_check(seqs, cfg.sync_warn, step + 1, accelerator)
                metrics.update(ppo_update(model, optimizer, accelerator, seqs, iters, cfg.temperature,
                                          cfg.micro_batch_size, tokenizer.pad_token_id, cfg.clip_low,
                                          cfg.clip_high, cfg.dual_clip, cfg.grad_clip))
            nonfinite_steps = nonfinite_steps + 1 if metrics.get("train/skipped_nonfinite") else 0
            # the engine samples the next step from the updated weights (gathered in full under FSDP)
            student.sync_weights(accelerator.unwrap_model(model),
                                 engine_weights(model, accelerator) if cfg.engine == "vllm" else None)

        # 11. buffer update from plain rollouts only
        if cfg.buffer:
            results = [(ex, int(sum(rewards)), len(rewards)) for ex, rewards in zip(questions, plain_rewards)]
            moves = buffer.update(results, cfg.tau)
            metrics.update({f"buffer/{k}": v for k, v in moves.items()})

        # bookkeeping: metrics, dumps, checkpoint, then the optional eval (a crash in it loses no checkpoint)
        metrics.update(step_metrics(seqs, questions, len(new), plain, reform, acc, hard, chosen, teacher_ok,
                                    buffer, cfg))
        metrics.update({**guided_metrics(cfg.algo, seqs, chosen, questions, hints, prefixes), **teacher_counts})
        metrics["count/teacher_failed"] = getattr(teacher, "failures", 0) - teacher_failures
        asked = getattr(teacher, "prompts", 0) - teacher_prompts
        if asked and metrics["count/teacher_failed"] == asked:  # a teacher that is gone is said, not just counted
            warnings.warn(f"step {step + 1}: every one of the {asked} requests to the teacher at {cfg.teacher_url} "
                          "failed (count/teacher_failed): no teacher answers, no judge verdicts this step; is the "
                          "server up and serving --teacher?")
        metrics.update({f"time/{k}": v for k, v in timer.items()}, **{"time/step": time.time() - t_step})
        if accelerator.num_processes > 1:
            metrics["dist/weight_checksum_spread"] = weight_checksum_spread(model, accelerator)
        write_step(cfg, step + 1, metrics, seqs, chosen, questions, prompts, reform, log_path, accelerator)
        bar.set_postfix(acc=f"{metrics['acc/plain']:.2f}", bcq=f"{metrics['acc/bcq']:.2f}",
                        ncq=f"{metrics['acc/ncq']:.2f}", buf=len(buffer), t=f"{metrics['time/step']:.0f}s")
        stop = cfg.max_nonfinite_steps and nonfinite_steps >= cfg.max_nonfinite_steps
        if (cfg.save_every and (step + 1) % cfg.save_every == 0) or step + 1 == cfg.steps or stop:
            save(cfg, step + 1, model, tokenizer, optimizer, buffer, data_pos, rng, accelerator)
        if stop:  # the skipped updates kept the weights finite: the checkpoint above holds the last good ones
            accelerator.end_training()
            raise SystemExit(f"step {step + 1}: stopping after {nonfinite_steps} rollout steps in a row whose "
                             "update had a NaN or inf loss or gradient (skipped, weights unchanged; see "
                             f"train/skipped_nonfinite in {log_path}); try a lower --lr, or --resume "
                             f"{cfg.out_dir} after a fix (--max-nonfinite-steps sets the limit)")
        add_to_step(step + 1, periodic_eval(student, teacher, cfg, step + 1, bar.write), log_path, accelerator)
    accelerator.end_training()
    return log_path


if __name__ == "__main__":
    main(parse_config())
