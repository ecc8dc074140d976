"""ZPPO training: RL post-training of a small student where a teacher helps only inside prompts.

    accelerate launch train.py --student Qwen3.5-0.8B --teacher Qwen3.5-27B   # GPU
    python demo.py                                                            # CPU, offline

One rollout step, as `train_loop` at the bottom runs it (numbers are the steps of docs/ZPPO.md, the spec):
    sample_groups   1 plain rollouts, 2 hard questions, 4 pre-cap, 3 teacher rollouts of the kept ones,
                    6 post-cap, 5 the BCQ / NCQ prompts (or the Hint / Prefix baseline's), 7 their rollouts
    zppo.episodes_of 8 plain, BCQ and NCQ of one question are three groups; 9 advantages over the step
    update          10 I mini-batch PPO updates (clip-higher, dual-clip, token-level mean), weight sync
    update_buffer   11 from the plain rollouts only
    finish_step     metrics, dumps, checkpoint, the optional evaluation
Every gradient token was sampled by the student: the teacher's text is only ever part of a prompt.

Deliberately left out, as in the paper: a KL penalty and a reference model, a value model, a learning-rate
schedule (constant), entropy bonuses. The distillation baselines (--algo off_distill / on_distill) run the
same loop with one JSD step to the teacher in place of step 10's PPO (baselines.distill_step).
"""
import math
import os
import random
import time
import warnings
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, replace

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs
from tqdm import tqdm

import checkpoint
from baselines import baseline_metrics, distill_step, hint_groups, prefix_groups, shared_teacher
from buffer import ReplayBuffer
from config import (
    DISTILLATION,
    TEACHER_GUIDED,
    max_model_len,
    parse_config,
    release_lock,
    take_lock,
    use_fsdp,
    validate,
)
from data import load_examples, take
from models import (
    TransformersEngine,
    checkpointing,
    frozen_engine,
    load_model,
    memory_check,
    resolve_model_name,
    shard,
    sharded,
    unsharded,
    warn_slow_kernels,
)
from reformulate import bcq_ncq_groups, group_prompt, plain_prompt, precap
from reward import score_rollouts
from rollout import Rollout, ShardedEngine, VLLMEngine, encode_prompt, pick_engine, vllm_dtype
from zppo import (
    Group,
    episodes_of,
    old_logprobs,
    plan_minibatches,
    ppo_update,
    reduce_sum,
    step_metrics,
    sync_check,
)


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
    model: torch.nn.Module  # the student: wrapped by accelerate (DDP), or its parameters FSDP2 shards
    tokenizer: object
    optimizer: torch.optim.Optimizer
    student: object  # the student's rollout engine (rollout.py, models.py)
    teacher: object  # the teacher's engine, or None (--teacher gold or none)
    examples: list  # the training questions
    buffer: ReplayBuffer
    rng: random.Random  # data-independent choices: replay sampling, tie-breaks, candidate picks, mini-batches
    start: int  # the first step to run (0, or the resumed checkpoint's)
    data_pos: tuple  # (pass over the data, position in it) before the next step
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


def trains_vision(path, cfg):
    """Whether the student has a vision tower that trains (a vision-language checkpoint, loaded whole, not
    frozen): some passes then reach it and others not."""
    from transformers import AutoConfig

    name = resolve_model_name(path)
    kwargs = {"gguf_file": os.path.basename(name)} if name.endswith(".gguf") else {}
    config = AutoConfig.from_pretrained(os.path.dirname(os.path.abspath(name)) if kwargs else name, **kwargs)
    return getattr(config, "vision_config", None) is not None and not cfg.text_only and not cfg.freeze_vision


def prepare_student(cfg, path, accelerator, images=False):
    """The student (text or vision-language class), its tokenizer, and AdamW over its trainable parameters:
    sharded with FSDP2 (models.shard), or wrapped by accelerate (DDP, autocast), with gradient checkpointing
    as asked. Under DDP a vision tower that trains is registered with find_unused_parameters (set when the
    accelerator was made), so a pass whose micro-batches hold no image on some rank (text data, or a text
    micro-batch of mixed data) leaves it as a single process would: no gradient where no rank used it."""
    model, tokenizer = load_model(path, text_only=cfg.text_only, role="student",
                                  pixels=(cfg.image_min_pixels, cfg.image_max_pixels))
    if cfg.freeze_vision:
        for name, p in model.named_parameters():
            p.requires_grad_(p.requires_grad and "visual" not in name)
    model.to(accelerator.device).train()
    warn_slow_kernels(model, accelerator.device)
    if cfg.gradient_checkpointing:  # only in training mode: the no-grad passes run in eval mode, unaffected
        checkpointing(model, True)
    if use_fsdp(cfg):
        model = shard(model, accelerator.mixed_precision, images)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                                  betas=(0.9, 0.999), eps=1e-8, weight_decay=cfg.weight_decay)
    if not use_fsdp(cfg):
        model, optimizer = accelerator.prepare(model, optimizer)
    return model, tokenizer, optimizer


def build_engines(cfg, accelerator, model, tokenizer, model_path):
    """The student's rollout engine and the teacher (None for 'gold' or none), sharded over processes."""
    cfg.engine = pick_engine(cfg.engine, accelerator.device)
    dtype, context = vllm_dtype(cfg.vllm_dtype, accelerator.device), max_model_len(cfg)
    if cfg.engine == "vllm":
        student = VLLMEngine(resolve_model_name(model_path), tokenizer, cfg.vllm_gpu_memory_utilization,
                             context, seed=cfg.seed + accelerator.process_index, sleep=cfg.vllm_sleep,
                             dtype=dtype, pixels=(cfg.image_min_pixels, cfg.image_max_pixels))
    else:  # the trainer's own module; under FSDP2 every unit is gathered while it generates
        student = TransformersEngine(accelerator.unwrap_model(model), tokenizer, cfg.gen_batch_size,
                                     (lambda: unsharded(model)) if sharded(model) else None, context)
    try:
        teacher = frozen_engine(
            None if cfg.teacher == "gold" else cfg.teacher, cfg.teacher_url,
            kind=cfg.engine if cfg.teacher_engine == "auto" else cfg.teacher_engine,
            device=accelerator.device,
            batch_size=cfg.gen_batch_size, timeout=cfg.teacher_timeout, retries=cfg.teacher_retries,
            concurrency=cfg.teacher_concurrency, gpu_memory_utilization=cfg.teacher_gpu_memory_utilization,
            seed=cfg.seed + accelerator.process_index, dtype=dtype, max_model_len=context,
            sleep=cfg.teacher_sleep and accelerator.device.type == "cuda")
    except OSError as e:  # a path that does not exist, an unreachable hub id: say it is the teacher
        raise OSError(f"the teacher (--teacher {cfg.teacher}): {e}") from e
    if accelerator.num_processes > 1:  # every rank generates its share of the prompts and sees all results
        student = ShardedEngine(student, accelerator)
        teacher = ShardedEngine(teacher, accelerator) if teacher is not None else None
    return student, teacher


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
    if cfg.algo in DISTILLATION:  # the teacher's distributions must compare with the student's: said now
        shared_teacher(teacher, tokenizer, model)
    return Run(accelerator, model, tokenizer, optimizer, student, teacher, examples, buffer, rng, start,
               tuple(data_pos), log_path)


# ---------------------------------------------------------------------------------------------------------
# steps 1-7: the step's groups


@dataclass
class Batch:
    """What steps 1-7 hand the update: the groups, and what the bookkeeping counts of them."""
    plain: list  # one plain Group per question: the new ones first, then the replayed ones
    helped: list  # ZPPO's BCQ / NCQ groups, or the Hint / Prefix baseline's
    n_new: int  # new questions (the rest of `plain` was replayed)
    counts: dict  # count/hard, count/too_long, count/no_teacher_correct, data/epoch


def sample_and_score(cfg, run, groups, timer):
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


def helped_groups(cfg, run, plain, kept, correct, cap):
    """Spec steps 6 and 5 (post-cap first: only the chosen instances are compressed and built): ZPPO's BCQ /
    NCQ groups; or the baseline's Hint or Prefix groups."""
    if cfg.algo == "hint":
        return hint_groups(plain, kept, correct, run.rng, run.teacher, cfg.hint_max_new_tokens)
    if cfg.algo == "prefix":  # cuts the teacher's own tokens: its tokenizer's, where its vocabulary differs
        theirs = getattr(run.teacher, "tokenizer", None)
        same = theirs is None or theirs.get_vocab() == run.tokenizer.get_vocab()
        return prefix_groups(plain, kept, correct, run.rng, run.tokenizer, cfg.prefix_frac,
                             None if same else theirs)
    return bcq_ncq_groups(plain, kept, correct, run.rng, cap, cfg.bcq, cfg.ncq,
                          run.teacher if cfg.compress else None, cfg.candidate_max_chars,
                          max_new_tokens=cfg.compress_max_new_tokens, temperature=cfg.compress_temperature,
                          top_p=cfg.top_p, top_k=cfg.top_k)


def sample_groups(cfg, run, timer):
    """Spec steps 1-7: the plain groups and the groups the teacher helps with, rolled out and scored."""
    # 1. plain rollouts on new questions + replayed hard ones, binary reward
    new, *run.data_pos = take(run.examples, cfg.questions_per_step, cfg.seed, *run.data_pos)
    n_replay = round_half_up(cfg.rho_replay * len(new)) if cfg.buffer else 0
    questions = new + run.buffer.sample(n_replay, run.rng, exclude={ex["id"] for ex in new})
    plain = sample_and_score(cfg, run, [Group(q, "plain", q["question"]) for q in questions], timer)
    acc = [sum(g.rewards) / len(g.rewards) for g in plain]

    # 2. hard: plain accuracy < tau; 4. pre-cap: hardest first, ties at random, at most rho_aug * N_new
    # (before 3: the teacher answers only the kept ones)
    hard = [i for i, a in enumerate(acc) if a < cfg.tau]
    guided = cfg.bcq or cfg.algo in TEACHER_GUIDED  # needs correct teacher rollouts of the kept questions
    cap = round_half_up(cfg.rho_aug * cfg.questions_per_step)
    kept = precap(acc, hard, cap, run.rng) if (guided or cfg.ncq) else []

    # 3. teacher rollouts on the kept hard questions, only the correct ones kept (never cached)
    with timed(timer, "teacher"):
        correct = {} if not guided else \
            dict(zip(kept, teacher_correct(cfg, run.teacher, [questions[i] for i in kept])))

    # 6. post-cap, 5. the BCQ / NCQ prompts from (compressed) candidates; or the Hint / Prefix groups
    with timed(timer, "teacher" if cfg.algo in TEACHER_GUIDED else "compress"):
        helped = helped_groups(cfg, run, plain, kept, correct, cap)

    # 7. student rollouts on them, scored against the original gold answer; a prompt too long for the
    # engine's context (--max-model-len) gets none, and its group is dropped and counted
    answered = [g for g in sample_and_score(cfg, run, helped, timer) if g.rollouts]
    counts = {"data/epoch": run.data_pos[0], "count/hard": len(hard),
              "count/too_long": len(helped) - len(answered),
              "count/no_teacher_correct": sum(not correct.get(i) for i in kept) if guided else 0}
    return Batch(plain, answered, len(new), counts)


# ---------------------------------------------------------------------------------------------------------
# step 10: the update, then the engine samples the next step from the new weights


@contextmanager
def oom_hint(cfg, episodes):
    """A CUDA out-of-memory error in the update, restated with its shapes and what to change."""
    try:
        yield
    except torch.OutOfMemoryError as e:
        longest = max((len(s.prompt_ids) + len(s.token_ids) for s in episodes), default=0)
        raise RuntimeError(
            f"out of GPU memory in the update: micro-batches of {cfg.micro_batch_size} sequences of up to "
            f"{longest} tokens (prompt + response); lower --micro-batch-size"
            + ("" if cfg.gradient_checkpointing else " or turn on --gradient-checkpointing")
            + " (no checkpoint was written for this step)") from e


def update(cfg, run, episodes, step):
    """Spec step 10: the plan, the sampling policy's log-probs (old ones of the PPO ratio; their gap to the
    engine's is the sync check), I optimizer steps."""
    acc, pad = run.accelerator, run.tokenizer.pad_token_id
    plan = plan_minibatches(episodes, cfg.iters_per_step, run.rng, acc.process_index, acc.num_processes,
                            cfg.skip_zero_adv)
    old, entropy = old_logprobs(run.model, episodes, plan, cfg.temperature, cfg.micro_batch_size, pad, acc)
    metrics = {"policy/entropy": entropy,
               "sync/logprob_abs_diff": sync_check(episodes, old, cfg.sync_warn, step, acc)}
    metrics.update(ppo_update(run.model, run.optimizer, acc, episodes, plan, old, cfg.temperature,
                              cfg.micro_batch_size, pad, cfg.clip_low, cfg.clip_high, cfg.dual_clip,
                              cfg.grad_clip))
    return metrics


def update_buffer(cfg, run, plain):
    """Spec step 11: admit the plain groups' hard questions, graduate the solved ones, evict the oldest."""
    if not cfg.buffer:
        return {}
    moves = run.buffer.update([(g.question, int(sum(g.rewards)), len(g.rewards)) for g in plain], cfg.tau)
    return {f"buffer/{k}": v for k, v in moves.items()}


# ---------------------------------------------------------------------------------------------------------
# bookkeeping


def weight_spread(model, accelerator):
    """DDP keeps the ranks' replicas identical; check it cheaply: max - min over ranks of the sum of all
    weights. Under FSDP each rank holds other shards, no replica: None."""
    if sharded(model) or accelerator.num_processes == 1:
        return None
    checksum = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum().reshape(1)
    sums = accelerator.gather(checksum)
    return (sums.max() - sums.min()).item()


def teacher_tally(teacher):
    """(requests that failed, prompts asked, prompts over its context) of the teacher so far, this rank's;
    zeros for none."""
    return [getattr(teacher, key, 0) for key in ("failures", "prompts", "too_long")]


def teacher_metrics(cfg, run, before, step):
    """count/teacher_failed and count/teacher_too_long since `before` (teacher_tally's), all ranks together
    (each rank's engine serves its share); a teacher that failed every request is said."""
    now = teacher_tally(run.teacher)
    failed, asked, too_long = reduce_sum(run.accelerator, [a - b for a, b in zip(now, before)])
    if asked and failed == asked:
        warnings.warn(f"step {step}: every one of the {asked:.0f} requests to the teacher at "
                      f"{cfg.teacher_url} failed (count/teacher_failed): no teacher answers, no judge "
                      "verdicts this step; is the server up and serving --teacher?")
    return {"count/teacher_failed": int(failed), "count/teacher_too_long": int(too_long)}


def finish_step(cfg, run, step, metrics, episodes, helped, nonfinite_steps, bar):
    """Metrics and dumps, the checkpoint, a stop after too many non-finite updates in a row, then the optional
    evaluation (after the checkpoint: a crash in it loses nothing)."""
    spread = weight_spread(run.model, run.accelerator)
    if spread is not None:  # DDP's replicas (FSDP has none)
        metrics["dist/weight_checksum_spread"] = spread
    checkpoint.write_step(cfg, step, metrics, episodes, helped, run.log_path, run.accelerator)
    bar.set_postfix(acc=f"{metrics['acc/plain']:.2f}", bcq=f"{metrics['acc/bcq']:.2f}",
                    ncq=f"{metrics['acc/ncq']:.2f}", buf=len(run.buffer), t=f"{metrics['time/step']:.0f}s")
    stop = cfg.max_nonfinite_steps and nonfinite_steps >= cfg.max_nonfinite_steps
    if (cfg.save_every and step % cfg.save_every == 0) or step == cfg.steps or stop:
        checkpoint.save(cfg, step, run.model, run.tokenizer, run.optimizer, run.buffer, run.data_pos, run.rng,
                        run.accelerator)
    if stop:  # the skipped updates kept the weights finite: the checkpoint above holds the last good ones
        run.accelerator.end_training()
        raise SystemExit(f"step {step}: stopping after {nonfinite_steps} rollout steps in a row whose update "
                         "had a NaN or inf loss or gradient (skipped, weights unchanged; see "
                         f"train/skipped_nonfinite in {run.log_path}); try a lower --lr, or --resume "
                         f"{cfg.out_dir} after a fix (--max-nonfinite-steps sets the limit)")
    if cfg.eval_benchmarks:  # eval.py's benchmarks: training itself never needs them
        from eval import periodic_eval

        periodic_eval(run.student, run.teacher, cfg, step, bar.write, run.log_path, run.accelerator)


def progress_bar(cfg, run):
    """The progress bar over the run's remaining steps (their numbers)."""
    return tqdm(range(run.start + 1, cfg.steps + 1), initial=run.start, total=cfg.steps, desc=cfg.algo,
                disable=not run.accelerator.is_main_process)


# ---------------------------------------------------------------------------------------------------------
# the loop


def train_loop(cfg, run):
    nonfinite_steps = 0  # steps in a row whose update skipped a mini-batch for a NaN / inf
    for step in (bar := progress_bar(cfg, run)):
        t_step, timer, tally = time.time(), defaultdict(float), teacher_tally(run.teacher)

        # 1-7. the plain groups, and the groups the teacher helps with
        batch = sample_groups(cfg, run, timer)

        # 8-9. every rollout an Episode with its group's advantage, over the whole step batch
        episodes = episodes_of(batch.plain + batch.helped, cfg.adv_norm)

        # 10. I mini-batch PPO updates, old log-probs those of the policy that sampled (the distillation
        # baselines: one JSD step to the teacher instead); then the engine gets the new weights
        with timed(timer, "update"), oom_hint(cfg, episodes):
            metrics = update(cfg, run, episodes, step) if cfg.algo not in DISTILLATION else \
                distill_step(cfg, run, batch.plain, episodes, timer, timed)
            run.student.sync_weights(run.model)  # vLLM: streamed, gathered from the shards under FSDP
        nonfinite_steps = nonfinite_steps + 1 if metrics.get("train/skipped_nonfinite") else 0

        # 11. buffer update from plain rollouts only
        metrics.update(update_buffer(cfg, run, batch.plain))

        # bookkeeping: the step's numbers (an update's own counts win: Off-Distill's teacher rollouts), then
        # metrics.jsonl, the checkpoint and the optional eval
        metrics = {**batch.counts, **metrics}
        metrics.update(step_metrics(batch.plain, batch.helped, episodes, batch.n_new, run.buffer, cfg.buffer),
                       **baseline_metrics(cfg.algo, batch.helped), **teacher_metrics(cfg, run, tally, step))
        metrics.update({f"time/{k}": v for k, v in timer.items()}, **{"time/step": time.time() - t_step})
        finish_step(cfg, run, step, metrics, episodes, batch.helped, nonfinite_steps, bar)
    run.accelerator.end_training()
    return run.log_path


def main(cfg):
    known = ()
    if cfg.eval_benchmarks:  # the names --eval-benchmarks may use (the evaluation stack loads only then)
        from benchmarks import BENCHMARKS as known
    validate(cfg, known)  # flags, the output folder, then the data: all before any model loads
    # one process writes a run folder: the main process holds OUT/lock until it exits, however it exits
    memory_check(cfg)  # on a GPU: a layout that cannot fit stops here
    lock = take_lock(cfg.out_dir) if os.environ.get("RANK", "0") == "0" else None
    try:
        return train_loop(cfg, setup(cfg))
    finally:
        release_lock(lock)
        # the process group closed while Python still runs: torch's gloo group, destroyed at interpreter exit
        # instead, can deadlock with its own worker thread (the process never exits)
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(parse_config())
