"""ZPPO training: RL post-training of a small student where a teacher helps only inside prompts.

    accelerate launch train.py --student Qwen3.5-0.8B --teacher Qwen3.5-27B   # GPU
    python demo.py                                                            # CPU, offline

One rollout step, as the loop at the bottom runs it (numbers are the steps of ZPPO.md, the spec):
    sample_groups   1 plain rollouts, 2 hard questions, 4 pre-cap, 3 teacher rollouts, 6 post-cap and
                    5 the BCQ / NCQ prompts (or the Hint / Prefix baseline's), 7 student rollouts on them
    zppo.episodes   8 plain, BCQ and NCQ of one question are three groups; 9 advantages over the step
    update          10 I mini-batch PPO updates (clip-higher, dual-clip, token-level mean), weight sync
    buffer.update   11 from the plain rollouts only
    finish_step     metrics, dumps, checkpoint, the optional evaluation
Every gradient token was sampled by the student: the teacher's text is only ever part of a prompt.

Deliberately left out, as in the paper: a KL penalty and a reference model, a value model, a learning-rate
schedule (constant), entropy bonuses. The distillation baselines (--algo off_distill / on_distill) update on a
JSD to the teacher instead of PPO: distill.py's loop, on this file's setup and bookkeeping.
"""
import math
import os
import random
import time
import warnings
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import partial

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs
from tqdm import tqdm

import checkpoint
from buffer import ReplayBuffer
from config import DISTILLATION, TEACHER_GUIDED, parse_config, use_fsdp, validate
from data import load_examples, take
from metrics import periodic_eval, step_metrics, teacher_metrics, teacher_tally, weight_spread, write_step
from reformulate import bcq_ncq_groups, group_prompt, hint_groups, plain_prompt, precap, prefix_groups
from reward import score_rollouts
from rollout import Rollout, build_engines, encode_prompt, prepare_student, trains_vision
from zppo import Group, episodes, old_logprobs, plan_minibatches, ppo_update, sync_check


def round_half_up(x):
    return math.floor(x + 0.5)


@contextmanager
def timed(timer, key):
    """Adds the seconds spent inside the block to timer[key]."""
    start = time.time()
    yield
    timer[key] += time.time() - start


# ---------------------------------------------------------------------------------------------------------
# setup: everything a run holds from its first step to its last


@dataclass
class Run:
    accelerator: Accelerator
    model: torch.nn.Module  # the student, wrapped by accelerate (DDP / FSDP)
    tokenizer: object
    optimizer: torch.optim.Optimizer
    student: object  # the student's rollout engine (rollout.py)
    teacher: object  # the teacher's engine, or None (--teacher gold or none)
    examples: list  # the training questions
    buffer: ReplayBuffer
    rng: random.Random  # data-independent choices: replay sampling, tie-breaks, candidate picks, mini-batches
    start: int  # the first step to run (0, or the resumed checkpoint's)
    data_pos: tuple  # (pass over the data, position in it) before the first step
    log_path: str  # metrics.jsonl


def load_data(cfg):
    """The training questions, before any model loads: every bad row named by file and line, ids unique,
    enough questions for one step, and for --teacher gold worked solutions to stand in for the teacher."""
    examples = load_examples(cfg.data, limit=cfg.data_limit, seed=cfg.seed, config=cfg.data_config,
                             dedup_ids=cfg.dedup_ids)
    if cfg.questions_per_step > len(examples):
        raise SystemExit(f"--questions-per-step {cfg.questions_per_step} is more than the {len(examples)} "
                         f"questions of {cfg.data}: a step would hold a question twice")
    without = sum(not ex.get("solution") for ex in examples)
    if cfg.teacher == "gold" and (cfg.bcq or cfg.algo in TEACHER_GUIDED) and without:
        if without == len(examples):
            raise SystemExit(f"--teacher gold: no question of {cfg.data} has a `solution` field, so no "
                             "question would ever get a correct teacher answer (no BCQ, no hint or prefix); "
                             "add worked solutions, use a teacher model, or --no-bcq")
        warnings.warn(f"--teacher gold: {without} of the {len(examples)} questions of {cfg.data} have no "
                      "`solution`: those never get a correct teacher answer (no BCQ)")
    return examples


def fit_prompts(cfg, examples, tokenizer):
    """The questions whose plain prompt fits --max-prompt-tokens; at least one step's worth, else
    SystemExit."""
    if any(e.get("images") for e in examples) and not hasattr(tokenizer, "image_processor"):
        raise ValueError(f"{cfg.data} has images but the student is a text model: use a vision-language "
                         "checkpoint" + (" without --text-only" if cfg.text_only else ""))
    lengths = [len(encode_prompt(tokenizer, plain_prompt(e))[0]) for e in examples]  # as the student sees it
    kept = [e for e, n in zip(examples, lengths) if n <= cfg.max_prompt_tokens]
    if len(kept) < len(examples):
        print(f"dropping {len(examples) - len(kept)} questions whose plain prompt exceeds "
              f"{cfg.max_prompt_tokens} tokens")
    if not kept:
        raise SystemExit(f"none of the {len(examples)} questions of {cfg.data} fits --max-prompt-tokens "
                         f"{cfg.max_prompt_tokens}: the shortest plain prompt has {min(lengths)} tokens")
    if cfg.questions_per_step > len(kept):
        raise SystemExit(f"--questions-per-step {cfg.questions_per_step} is more than the {len(kept)} "
                         f"questions of {cfg.data} that fit --max-prompt-tokens {cfg.max_prompt_tokens}: a "
                         "step would hold a question twice")
    return kept


def setup(cfg):
    """Data, accelerate, the student and its optimizer, the engines, the buffer, and a resumed run's state."""
    examples = load_data(cfg)
    ckpt = checkpoint.find_checkpoint(cfg.resume) if cfg.resume else None
    problems = checkpoint.resume_problems(cfg, ckpt) if ckpt else []
    if problems:  # before anything loads, and before config.json is rewritten
        raise SystemExit("train.py: cannot resume:\n  " + "\n  ".join(problems))
    # DDP with a vision tower that trains: a pass that reaches it on no rank (text micro-batches) must leave
    # it without a gradient instead of failing DDP's check that every parameter got one
    ddp = DistributedDataParallelKwargs(find_unused_parameters=trains_vision(ckpt or cfg.student, cfg)
                                        and not use_fsdp(cfg))
    world = int(os.environ.get("WORLD_SIZE", "1"))  # the processes the launcher started
    # several processes without a GPU: accelerate joins them (gloo) only when told it runs on the CPU; left to
    # itself it makes each one a run of its own, racing the others on the run folder
    accelerator = Accelerator(log_with=None if cfg.report_to == "none" else cfg.report_to,
                              project_dir=cfg.out_dir, mixed_precision=cfg.mixed_precision,
                              kwargs_handlers=[ddp], cpu=world > 1 and not torch.cuda.is_available())
    if accelerator.num_processes != world:
        raise SystemExit(f"train.py: the launcher started {world} processes (WORLD_SIZE) but accelerate "
                         f"joined {accelerator.num_processes}: each would train and write {cfg.out_dir} on "
                         "its own")
    if cfg.overwrite and accelerator.is_main_process and os.path.isdir(cfg.out_dir):
        checkpoint.clear_run(cfg.out_dir)
    accelerator.wait_for_everyone()
    rng = random.Random(cfg.seed)
    torch.manual_seed(cfg.seed)
    os.makedirs(cfg.out_dir, exist_ok=True)
    images = any(e.get("images") for e in examples)
    model, tokenizer, optimizer = prepare_student(cfg, ckpt or cfg.student, accelerator, images)
    examples = fit_prompts(cfg, examples, tokenizer)
    student, teacher = build_engines(cfg, accelerator, model, tokenizer, ckpt or cfg.student)
    buffer = ReplayBuffer(cfg.buffer_capacity)
    start, data_pos = (0, (0, 0)) if not ckpt else \
        checkpoint.resume_from(cfg, ckpt, model, optimizer, rng, buffer, accelerator)
    log_path = checkpoint.open_run(cfg, start, accelerator, ckpt)
    return Run(accelerator, model, tokenizer, optimizer, student, teacher, examples, buffer, rng, start,
               tuple(data_pos), log_path)


# ---------------------------------------------------------------------------------------------------------
# steps 1-7: the step's groups


def help_builder(cfg, run):
    """Steps 5-6 as one function of (plain groups, kept question indices, correct teacher rollouts, rng):
    ZPPO's BCQ/NCQ groups, or a baseline's Hint or Prefix groups, and the timer it counts under."""
    if cfg.algo == "hint":
        return "teacher", partial(hint_groups, teacher=run.teacher, max_new_tokens=cfg.hint_max_new_tokens)
    if cfg.algo == "prefix":  # cuts the teacher's own tokens: its tokenizer's, where its vocabulary differs
        theirs = getattr(run.teacher, "tokenizer", None)
        same = theirs is None or theirs.get_vocab() == run.tokenizer.get_vocab()
        return "teacher", partial(prefix_groups, tokenizer=run.tokenizer, frac=cfg.prefix_frac,
                                  teacher_tokenizer=None if same else theirs)
    return "compress", partial(
        bcq_ncq_groups, cap=round_half_up(cfg.rho_aug * cfg.questions_per_step), bcq=cfg.bcq, ncq=cfg.ncq,
        compressor=run.teacher if cfg.compress else None, max_chars=cfg.candidate_max_chars,
        max_new_tokens=cfg.compress_max_new_tokens, temperature=cfg.compress_temperature, top_p=cfg.top_p,
        top_k=cfg.top_k)


def answer(cfg, run, groups, timer):
    """Spec steps 1 and 7: G_S student rollouts on each group's prompt, each scored 0/1 against its question's
    gold answer (the rule grader, or the teacher as judge where the rule cannot decide)."""
    if not groups:
        return []
    prefixes = [g.prefix for g in groups] if any(g.prefix is not None for g in groups) else None
    with timed(timer, "rollout"):
        rollouts = run.student.generate([group_prompt(g) for g in groups], n=cfg.group_size,
                                        max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                                        top_p=cfg.top_p, top_k=cfg.top_k, response_prefixes=prefixes)
    with timed(timer, "score"):
        rewards = score_rollouts(rollouts, [g.question for g in groups], run.teacher)
    return [replace(g, rollouts=rs, rewards=ss) for g, rs, ss in zip(groups, rollouts, rewards)]


def teacher_correct(cfg, teacher, questions):
    """Spec step 3: G_T teacher rollouts per question on the plain prompt, the correct ones kept (a list of
    Rollouts per question). With --teacher gold the data set's worked solution stands in (text, no tokens)."""
    if cfg.teacher == "gold":
        groups = [[Rollout(ex["solution"], [], [])] if ex.get("solution") else [] for ex in questions]
    elif teacher is not None and questions:
        groups = teacher.generate([plain_prompt(ex) for ex in questions], n=cfg.teacher_group_size,
                                  max_new_tokens=cfg.teacher_max_new_tokens, temperature=cfg.temperature,
                                  top_p=cfg.top_p, top_k=cfg.top_k)
    else:
        groups = [[] for _ in questions]
    scores = score_rollouts(groups, questions, teacher)
    return [[r for r, ok in zip(g, ss) if ok] for g, ss in zip(groups, scores)]


def sample_groups(cfg, run, build_help, data_pos, timer):
    """Spec steps 1-7. Returns (plain groups, helped groups, the number of new questions, facts only this
    function sees, the data position after the step)."""
    # 1. plain rollouts on new questions + replayed hard ones, binary reward
    new, *data_pos = take(run.examples, cfg.questions_per_step, cfg.seed, *data_pos)
    n_replay = round_half_up(cfg.rho_replay * len(new)) if cfg.buffer else 0
    questions = new + run.buffer.sample(n_replay, run.rng, exclude={ex["id"] for ex in new})
    plain = answer(cfg, run, [Group(q, "plain", q["question"]) for q in questions], timer)
    acc = [sum(g.rewards) / len(g.rewards) for g in plain]

    # 2. hard: plain accuracy < tau; 4. pre-cap: hardest first, ties at random, at most rho_aug * N_new
    hard = [i for i, a in enumerate(acc) if a < cfg.tau]
    guided = cfg.bcq or cfg.algo in TEACHER_GUIDED  # needs correct teacher rollouts of the kept questions
    cap = round_half_up(cfg.rho_aug * cfg.questions_per_step)
    kept = precap(acc, hard, cap, run.rng) if (guided or cfg.ncq) else []

    # 3. teacher rollouts on the kept hard questions, only the correct ones kept (never cached)
    with timed(timer, "teacher"):
        correct = {} if not guided else \
            dict(zip(kept, teacher_correct(cfg, run.teacher, [questions[i] for i in kept])))

    # 6. post-cap, 5. BCQ / NCQ prompts from (compressed) candidates; or the Hint / Prefix groups
    phase, build = build_help
    with timed(timer, phase):
        helped = build(plain, kept, correct, run.rng)

    # 7. student rollouts on them, scored against the original gold answer; a prompt too long for the
    # engine's context (--max-model-len) gets none, and its group is dropped and counted
    answered = [g for g in answer(cfg, run, helped, timer) if g.rollouts]
    facts = {"data/epoch": data_pos[0], "count/hard": len(hard),
             "count/too_long": len(helped) - len(answered),
             "count/no_teacher_correct": sum(not correct.get(i) for i in kept) if guided else 0}
    helped = answered
    return plain, helped, len(new), facts, tuple(data_pos)


# ---------------------------------------------------------------------------------------------------------
# step 10: the update, then the engine samples the next step from the new weights


@contextmanager
def oom_hint(cfg, eps):
    """A CUDA out-of-memory error in the update, restated with its shapes and what to change."""
    try:
        yield
    except torch.OutOfMemoryError as e:
        longest = max((len(s.prompt_ids) + len(s.token_ids) for s in eps), default=0)
        raise RuntimeError(
            f"out of GPU memory in the update: micro-batches of {cfg.micro_batch_size} sequences of up to "
            f"{longest} tokens (prompt + response); lower --micro-batch-size"
            + ("" if cfg.gradient_checkpointing else " or turn on --gradient-checkpointing")
            + " (no checkpoint was written for this step)") from e


def update(cfg, run, eps, step):
    """Spec step 10: the plan, the sampling policy's log-probs (old ones of the PPO ratio; their gap to the
    engine's is the sync check), I optimizer steps; then the engine gets the new weights."""
    acc, pad = run.accelerator, run.tokenizer.pad_token_id
    plan = plan_minibatches(eps, cfg.iters_per_step, run.rng, acc.process_index, acc.num_processes,
                            cfg.skip_zero_adv)
    old, entropy = old_logprobs(run.model, eps, plan, cfg.temperature, cfg.micro_batch_size, pad, acc)
    metrics = {"policy/entropy": entropy,
               "sync/logprob_abs_diff": sync_check(eps, old, cfg.sync_warn, step, acc)}
    metrics.update(ppo_update(run.model, run.optimizer, acc, eps, plan, old, cfg.temperature,
                              cfg.micro_batch_size, pad, cfg.clip_low, cfg.clip_high, cfg.dual_clip,
                              cfg.grad_clip))
    sync_engine(cfg, run)
    return metrics


def sync_engine(cfg, run):
    """The student's engine samples the next step from the updated weights (vLLM's reload streams them, one
    tensor at a time, gathered from the shards under FSDP; the transformers engine shares the module)."""
    run.student.sync_weights(run.model)


def replay(cfg, run, plain):
    """Spec step 11: admit the plain groups' hard questions, graduate the solved ones, evict the oldest."""
    if not cfg.buffer:
        return {}
    moves = run.buffer.update([(g.question, int(sum(g.rewards)), len(g.rewards)) for g in plain], cfg.tau)
    return {f"buffer/{k}": v for k, v in moves.items()}


# ---------------------------------------------------------------------------------------------------------
# bookkeeping, shared with distill.py's loop


def finish_step(cfg, run, step, metrics, eps, helped, data_pos, nonfinite_steps, bar):
    """Metrics and dumps, the checkpoint, a stop after too many non-finite updates in a row, then the optional
    evaluation (after the checkpoint: a crash in it loses nothing)."""
    spread = weight_spread(run.model, run.accelerator) if run.accelerator.num_processes > 1 else None
    if spread is not None:  # DDP's replicas (FSDP has none)
        metrics["dist/weight_checksum_spread"] = spread
    write_step(cfg, step, metrics, eps, helped, run.log_path, run.accelerator)
    bar.set_postfix(acc=f"{metrics['acc/plain']:.2f}", bcq=f"{metrics['acc/bcq']:.2f}",
                    ncq=f"{metrics['acc/ncq']:.2f}", buf=len(run.buffer), t=f"{metrics['time/step']:.0f}s")
    stop = cfg.max_nonfinite_steps and nonfinite_steps >= cfg.max_nonfinite_steps
    if (cfg.save_every and step % cfg.save_every == 0) or step == cfg.steps or stop:
        checkpoint.save(cfg, step, run.model, run.tokenizer, run.optimizer, run.buffer, data_pos, run.rng,
                        run.accelerator)
    if stop:  # the skipped updates kept the weights finite: the checkpoint above holds the last good ones
        run.accelerator.end_training()
        raise SystemExit(f"step {step}: stopping after {nonfinite_steps} rollout steps in a row whose update "
                         "had a NaN or inf loss or gradient (skipped, weights unchanged; see "
                         f"train/skipped_nonfinite in {run.log_path}); try a lower --lr, or --resume "
                         f"{cfg.out_dir} after a fix (--max-nonfinite-steps sets the limit)")
    periodic_eval(run.student, run.teacher, cfg, step, bar.write, run.log_path, run.accelerator)


def steps(cfg, run):
    """The progress bar over the run's remaining steps."""
    return tqdm(range(run.start + 1, cfg.steps + 1), initial=run.start, total=cfg.steps, desc=cfg.algo,
                disable=not run.accelerator.is_main_process)


# ---------------------------------------------------------------------------------------------------------
# the loop


def train_loop(cfg, run):
    build_help = help_builder(cfg, run)
    data_pos, nonfinite_steps = run.data_pos, 0  # nonfinite: steps in a row whose update skipped a mini-batch
    for step in (bar := steps(cfg, run)):
        t_step, timer, tally = time.time(), defaultdict(float), teacher_tally(run.teacher)

        # 1-7. the plain groups, and the groups the teacher helps with
        plain, helped, n_new, facts, data_pos = sample_groups(cfg, run, build_help, data_pos, timer)

        # 8-9. every rollout an Episode with its group's advantage, over the whole step batch
        eps = episodes(plain + helped, cfg.adv_norm)

        # 10. I mini-batch updates; old log-probs are those of the policy that sampled
        with timed(timer, "update"), oom_hint(cfg, eps):
            metrics = update(cfg, run, eps, step)
        nonfinite_steps = nonfinite_steps + 1 if metrics["train/skipped_nonfinite"] else 0

        # 11. buffer update from plain rollouts only
        metrics.update(replay(cfg, run, plain))

        # bookkeeping: the step's numbers, then metrics.jsonl, the checkpoint and the optional eval
        metrics.update(facts, **step_metrics(cfg, plain, helped, eps, n_new, run.buffer),
                       **teacher_metrics(run.teacher, tally, step, cfg.teacher_url, run.accelerator))
        metrics.update({f"time/{k}": v for k, v in timer.items()}, **{"time/step": time.time() - t_step})
        finish_step(cfg, run, step, metrics, eps, helped, data_pos, nonfinite_steps, bar)
    run.accelerator.end_training()
    return run.log_path


def main(cfg):
    validate(cfg)  # flags, the output folder, then the data: all before any model loads
    # one process writes a run folder: the main process holds OUT/lock until it exits, however it exits
    lock = checkpoint.take_lock(cfg.out_dir) if os.environ.get("RANK", "0") == "0" else None
    try:
        run = setup(cfg)
        if cfg.algo in DISTILLATION:
            from distill import distill_loop  # a different update: its own short loop on this setup

            return distill_loop(cfg, run)
        return train_loop(cfg, run)
    finally:
        checkpoint.release_lock(lock)
        # the process group closed while Python still runs: torch's gloo group, destroyed at interpreter exit
        # instead, can deadlock with its own worker thread (the process never exits)
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(parse_config())
