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
import signal
import sys
import time
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
    parse_config,
    use_fsdp,
    validate,
)
from data import fit_prompts, load_training_data, take
from device import Meter, device_peak, flop_parameters, memory_check, perf_metrics, release_memory
from engines.server import teacher_metrics, teacher_tally
from logprobs import shares_prompts
from models import build_engines, prepare_student, short_calls, trains_vision
from reformulate import bcq_ncq_groups, group_prompt, plain_prompt, precap
from reward import score_rollouts
from rollout import Rollout
from zppo import (
    Group,
    episodes_of,
    mean_entropy,
    old_logprobs,
    plan_minibatches,
    ppo_update,
    reduce_sum,
    step_metrics,
    sync_check,
    weight_spread,
)


def round_half_up(x):
    return math.floor(x + 0.5)


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
    helper: object  # the same teacher for its short calls (judge, compression, hints): --helper-thinking
    examples: list  # the training questions
    buffer: ReplayBuffer
    rng: random.Random  # data-independent choices: replay sampling, tie-breaks, candidate picks, mini-batches
    start: int  # the first step to run (0, or the resumed checkpoint's)
    data_pos: tuple  # (pass over the data, position in it) before the next step
    log_path: str  # metrics.jsonl
    meter: Meter  # each phase's seconds and peak memory
    parameters: int  # the student's parameters a token's forward multiplies by (model FLOPs)
    peak: float  # one process's device peak, FLOP/s (None: unknown), for perf/mfu
    share: bool  # a prompt's rollouts share its pass in the update (--share-prompts, where the model allows)


def setup(cfg):
    """Data, accelerate, the student and its optimizer, the engines, the buffer, and a resumed run's state."""
    examples = load_training_data(cfg)
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
    # the device's peak for perf/mfu (a CPU's is measured: a short matmul probe); --share-prompts if it can
    dtype = torch.bfloat16 if cfg.mixed_precision == "bf16" else next(model.parameters()).dtype
    peak, source = device_peak(accelerator.device, dtype)
    share = cfg.share_prompts and shares_prompts(model)
    if accelerator.is_main_process:
        print(f"train.py: perf/mfu against {f'{peak / 1e12:.2f} TFLOP/s per process' if peak else 'nothing'} "
              f"({source})" + ("; every rollout's pass reads its own prompt (--share-prompts needs full "
                               "attention through SDPA)" if cfg.share_prompts and not share else ""),
              file=sys.stderr, flush=True)
    helper = short_calls(teacher, cfg.helper_thinking)
    flops = flop_parameters(accelerator.unwrap_model(model))
    return Run(accelerator, model, tokenizer, optimizer, student, teacher, helper, examples, buffer, rng,
               start, tuple(data_pos), log_path, Meter(accelerator.device), flops, peak, share)


# ---------------------------------------------------------------------------------------------------------
# steps 1-7: the step's groups


@dataclass
class Batch:
    """What steps 1-7 hand the update: the groups, and what the bookkeeping counts of them."""
    plain: list  # one plain Group per question: the new ones first, then the replayed ones
    helped: list  # ZPPO's BCQ / NCQ groups, or the Hint / Prefix baseline's
    n_new: int  # new questions (the rest of `plain` was replayed)
    counts: dict  # count/hard, count/too_long, count/no_teacher_correct, data/epoch


def sample_and_score(cfg, run, groups):
    """Spec steps 1 and 7: G_S student rollouts on each group's prompt, each scored 0/1 against its question's
    gold answer (the rule grader, or the teacher as judge where the rule cannot decide)."""
    if not groups:
        return []
    prefixes = [g.prefix for g in groups] if any(g.prefix is not None for g in groups) else None
    with run.meter.phase("rollout"):
        rollouts = run.student.generate([group_prompt(g) for g in groups], n=cfg.group_size,
                                        max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                                        top_p=cfg.top_p, top_k=cfg.top_k, response_prefixes=prefixes)
    with run.meter.phase("score"):
        rewards = score_rollouts(rollouts, [g.question for g in groups], run.helper)
    return [replace(g, rollouts=rs, rewards=ss) for g, rs, ss in zip(groups, rollouts, rewards)]


def teacher_correct(cfg, teacher, questions, judge=None):
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
    scores = score_rollouts(groups, questions, judge or teacher)
    return [[r for r, ok in zip(g, ss) if ok] for g, ss in zip(groups, scores)]


def helped_groups(cfg, run, plain, kept, correct, cap):
    """Spec steps 6 and 5 (post-cap first: only the chosen instances are compressed and built): ZPPO's BCQ /
    NCQ groups; or the baseline's Hint or Prefix groups."""
    if cfg.algo == "hint":
        return hint_groups(plain, kept, correct, run.rng, run.helper, cfg.hint_max_new_tokens)
    if cfg.algo == "prefix":  # cuts the teacher's own tokens: its tokenizer's, where its vocabulary differs
        theirs = getattr(run.teacher, "tokenizer", None)
        same = theirs is None or theirs.get_vocab() == run.tokenizer.get_vocab()
        return prefix_groups(plain, kept, correct, run.rng, run.tokenizer, cfg.prefix_frac,
                             None if same else theirs)
    return bcq_ncq_groups(plain, kept, correct, run.rng, cap, cfg.bcq, cfg.ncq,
                          run.helper if cfg.compress else None, cfg.candidate_max_chars,
                          max_new_tokens=cfg.compress_max_new_tokens, temperature=cfg.compress_temperature,
                          top_p=cfg.top_p, top_k=cfg.top_k)


def sample_groups(cfg, run):
    """Spec steps 1-7: the plain groups and the groups the teacher helps with, rolled out and scored."""
    # 1. plain rollouts on new questions + replayed hard ones, binary reward
    new, *run.data_pos = take(run.examples, cfg.questions_per_step, cfg.seed, *run.data_pos)
    n_replay = round_half_up(cfg.rho_replay * len(new)) if cfg.buffer else 0
    questions = new + run.buffer.sample(n_replay, run.rng, exclude={ex["id"] for ex in new})
    plain = sample_and_score(cfg, run, [Group(q, "plain", q["question"]) for q in questions])
    acc = [sum(g.rewards) / len(g.rewards) for g in plain]

    # 2. hard: plain accuracy < tau; 4. pre-cap: hardest first, ties at random, at most rho_aug * N_new
    # (before 3: the teacher answers only the kept ones)
    hard = [i for i, a in enumerate(acc) if a < cfg.tau]
    guided = cfg.bcq or cfg.algo in TEACHER_GUIDED  # needs correct teacher rollouts of the kept questions
    cap = round_half_up(cfg.rho_aug * cfg.questions_per_step)
    kept = precap(acc, hard, cap, run.rng) if (guided or cfg.ncq) else []

    # 3. teacher rollouts on the kept hard questions, only the correct ones kept (never cached)
    with run.meter.phase("teacher"):
        correct = {} if not guided else \
            dict(zip(kept, teacher_correct(cfg, run.teacher, [questions[i] for i in kept], run.helper)))

    # 6. post-cap, 5. the BCQ / NCQ prompts from (compressed) candidates; or the Hint / Prefix groups
    with run.meter.phase("teacher" if cfg.algo in TEACHER_GUIDED else "compress"):
        helped = helped_groups(cfg, run, plain, kept, correct, cap)

    # 7. student rollouts on them, scored against the original gold answer; a prompt too long for the
    # engine's context (--max-model-len) gets none, and its group is dropped and counted
    answered = [g for g in sample_and_score(cfg, run, helped) if g.rollouts]
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
                            cfg.skip_zero_adv, cfg.old_logprobs == "all", run.share)
    old, entropy, ran = old_logprobs(run.model, episodes, plan, cfg.temperature, cfg.micro_batch_size, pad,
                                     acc, run.share)
    metrics, first = ppo_update(run.model, run.optimizer, acc, episodes, plan, old, cfg.temperature,
                                cfg.micro_batch_size, pad, cfg.clip_low, cfg.clip_high, cfg.dual_clip,
                                cfg.grad_clip, run.share)
    metrics["policy/entropy"] = mean_entropy(acc, entropy, first)
    metrics["sync/logprob_abs_diff"] = sync_check(episodes, old, cfg.sync_warn, step, acc)
    # the log-prob pass's tokens, all ranks' (ppo_update counts its passes' in tokens/update)
    metrics["tokens/forward"] = int(reduce_sum(acc, [ran])[0])
    return metrics


def update_buffer(cfg, run, plain):
    """Spec step 11: admit the plain groups' hard questions, graduate the solved ones, evict the oldest."""
    if not cfg.buffer:
        return {}
    moves = run.buffer.update([(g.question, int(sum(g.rewards)), len(g.rewards)) for g in plain], cfg.tau)
    return {f"buffer/{k}": v for k, v in moves.items()}


# ---------------------------------------------------------------------------------------------------------
# bookkeeping


def eval_due(cfg, step):
    """Whether the step evaluates (--eval-benchmarks every --eval-every steps, and at the end)."""
    every = cfg.eval_every and step % cfg.eval_every == 0
    return bool(cfg.eval_benchmarks) and bool(every or step == cfg.steps)


def evaluate(cfg, run, step, bar):
    """eval.py's benchmarks on the current weights, their numbers added to the step's metrics line."""
    from eval import periodic_eval  # training itself never needs the evaluation stack

    periodic_eval(run.student, run.helper, cfg, step, bar.write, run.log_path, run.accelerator)


def finish_step(cfg, run, step, metrics, episodes, helped, nonfinite_steps, bar):
    """Metrics and dumps, the checkpoint, a stop after too many non-finite updates in a row, then the optional
    evaluation (after the checkpoint: a crash in it loses nothing; its line says eval/pending until it ends,
    so a resume runs it). Returns whether it saved a checkpoint."""
    spread = weight_spread(run.model, run.accelerator)
    if spread is not None:  # DDP's replicas (FSDP has none)
        metrics["dist/weight_checksum_spread"] = spread
    if eval_due(cfg, step):
        metrics["eval/pending"] = 1
    checkpoint.write_step(cfg, step, metrics, episodes, helped, run.log_path, run.accelerator)
    bar.set_postfix(acc=f"{metrics['acc/plain']:.2f}", bcq=f"{metrics['acc/bcq']:.2f}",
                    ncq=f"{metrics['acc/ncq']:.2f}", buf=len(run.buffer), t=f"{metrics['time/step']:.0f}s",
                    gen=f"{metrics.get('perf/rollout_tokens_per_s', 0):.0f}tok/s",
                    upd=f"{metrics.get('perf/update_tokens_per_s', 0):.0f}tok/s",
                    mfu=f"{metrics['perf/mfu']:.1%}" if "perf/mfu" in metrics else "-")
    stop = cfg.max_nonfinite_steps and nonfinite_steps >= cfg.max_nonfinite_steps
    save = (cfg.save_every and step % cfg.save_every == 0) or step == cfg.steps or stop
    if save:
        checkpoint.save(cfg, step, run.model, run.tokenizer, run.optimizer, run.buffer, run.data_pos, run.rng,
                        run.accelerator)
    if stop:  # the skipped updates kept the weights finite: the checkpoint above holds the last good ones
        end_training(run)  # every rank stops here: the step metrics are global
        raise SystemExit(f"step {step}: stopping after {nonfinite_steps} rollout steps in a row whose update "
                         "had a NaN or inf loss or gradient (skipped, weights unchanged; see "
                         f"train/skipped_nonfinite in {run.log_path}); try a lower --lr, or --resume "
                         f"{cfg.out_dir} after a fix (--max-nonfinite-steps sets the limit)")
    if eval_due(cfg, step):
        evaluate(cfg, run, step, bar)
    return bool(save)


def stop_when_asked(cfg, run, step, saved, request):
    """A stop request at a safe point: the checkpoint of `step` (unless saved already), then exit with REQUEUE
    (75, "try again"), the lock released on the way out."""
    if not saved and step > 0:
        checkpoint.save(cfg, step, run.model, run.tokenizer, run.optimizer, run.buffer, run.data_pos, run.rng,
                        run.accelerator)
    if run.accelerator.is_main_process and os.path.exists(request.path):
        os.remove(request.path)  # acted on: the next incarnation starts clean
    if run.accelerator.is_main_process:
        print(f"train.py: stopped as asked ({request.reason()}) at step {step}, its checkpoint saved; "
              f"continue with --resume {cfg.out_dir}", file=sys.stderr, flush=True)
    end_training(run)
    raise SystemExit(REQUEUE)


def step_state(run):
    """What steps 1-7 consume before the update changes anything: the random states and the data position.
    Restored, a step dropped by a stop request leaves the run exactly where the previous step ended."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    return run.rng.getstate(), torch.get_rng_state(), cuda, tuple(run.data_pos)


def restore_step_state(run, state):
    python, cpu, cuda, data_pos = state
    run.rng.setstate(python)
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)
    run.data_pos = data_pos


def step_throughput(run, batch, metrics, seconds):
    """The step's seconds, peak memory, tokens per second and utilisation per phase (device.perf_metrics),
    from its token counts: sampled by the student, its prompts (read once per group), and the update's."""
    groups = [g for g in batch.plain + batch.helped if g.rollouts]
    tokens = {"rollout": sum(len(r.token_ids) for g in groups for r in g.rollouts),
              "prefill": sum(len(g.rollouts[0].prompt_ids) for g in groups),
              "forward": metrics.get("tokens/forward", 0), "update": metrics.get("tokens/update", 0)}
    world = run.accelerator.num_processes
    return {"tokens/rollout": tokens["rollout"],
            **perf_metrics(run.meter, seconds, tokens, run.parameters, run.peak, world)}


def progress_bar(cfg, run):
    """The progress bar over the run's remaining steps (their numbers)."""
    return tqdm(range(run.start + 1, cfg.steps + 1), initial=run.start, total=cfg.steps, desc=cfg.algo,
                disable=not run.accelerator.is_main_process)


# ---------------------------------------------------------------------------------------------------------
# stopping when asked: a scheduler's signal, or OUT/stop

REQUEUE = 75  # the exit status of a run stopped when asked, after its checkpoint (sysexits' EX_TEMPFAIL)
STOP_SIGNALS = ("SIGTERM", "SIGINT", "SIGUSR1", "SIGUSR2")


class StopRequest:
    """A request to stop at the run's next safe point, with a checkpoint: one of STOP_SIGNALS (SIGTERM is how
    schedulers end a job, SIGKILL following after a grace period; SLURM's --signal=USR1@SECONDS warns before
    the time limit; SIGINT is Ctrl-C), or a file OUT/stop, which a job script can create on any node whatever
    process got the scheduler's signal. A second signal stops at once (the lock is still released)."""

    def __init__(self, out_dir):
        self.path, self.signum, self.previous = os.path.join(out_dir, "stop"), None, {}

    def __enter__(self):
        if os.path.exists(self.path):  # left by an earlier incarnation of this run: not a request to this one
            os.remove(self.path)
        for name in STOP_SIGNALS:
            self.previous[name] = signal.signal(getattr(signal, name), self.handle)
        return self

    def __exit__(self, *exc):
        for name, handler in self.previous.items():
            signal.signal(getattr(signal, name), handler)

    def handle(self, signum, frame):
        if self.signum is not None:
            raise SystemExit(128 + signum)
        self.signum = signum
        print(f"train.py: {signal.Signals(signum).name}: stopping at the next safe point with a checkpoint "
              "(the same signal again stops at once, without one)", file=sys.stderr, flush=True)

    def asked(self, accelerator):
        """Whether any rank was asked to stop (a collective: every rank calls it at the same points)."""
        mine = self.signum is not None or (accelerator.is_main_process and os.path.exists(self.path))
        return bool(reduce_sum(accelerator, [float(mine)])[0])

    def reason(self):
        return signal.Signals(self.signum).name if self.signum is not None else self.path


# ---------------------------------------------------------------------------------------------------------
# the loop


def train_loop(cfg, run, request):
    nonfinite_steps, saved = 0, run.start  # steps in a row whose update was skipped; the last step saved
    bar = progress_bar(cfg, run)
    if checkpoint.pending_eval(run.log_path, run.start):  # a crash cut the resumed step's evaluation short
        evaluate(cfg, run, run.start, bar)
    for step in bar:
        t_step, tally = time.perf_counter(), teacher_tally(run.teacher)
        run.meter.step()
        before = step_state(run)

        # 1-7. the plain groups, and the groups the teacher helps with
        batch = sample_groups(cfg, run)
        if request.asked(run.accelerator):  # before the update: the step is dropped, the run stops as it was
            restore_step_state(run, before)
            stop_when_asked(cfg, run, step - 1, saved == step - 1, request)

        # 8-9. every rollout an Episode with its group's advantage, over the whole step batch
        episodes = episodes_of(batch.plain + batch.helped, cfg.adv_norm)

        # 10. I mini-batch PPO updates, old log-probs those of the policy that sampled (the distillation
        # baselines: one JSD step to the teacher instead); then the engine gets the new weights
        with run.meter.phase("update"), oom_hint(cfg, episodes):
            metrics = update(cfg, run, episodes, step) if cfg.algo not in DISTILLATION else \
                distill_step(cfg, run, batch.plain, episodes)
        with run.meter.phase("sync"):  # vLLM: streamed, gathered from the shards under FSDP
            run.student.sync_weights(run.model)
        release_memory()  # the update's freed activations handed back: the next peak is the step's own
        nonfinite_steps = nonfinite_steps + 1 if metrics.get("train/skipped_nonfinite") else 0

        # 11. buffer update from plain rollouts only
        metrics.update(update_buffer(cfg, run, batch.plain))

        # bookkeeping: the step's numbers (an update's own counts win: Off-Distill's teacher rollouts), then
        # metrics.jsonl, the checkpoint and the optional eval
        metrics = {**batch.counts, **metrics}
        metrics.update(step_metrics(batch.plain, batch.helped, episodes, batch.n_new, run.buffer, cfg.buffer),
                       **baseline_metrics(cfg.algo, batch.helped),
                       **teacher_metrics(run.teacher, tally, step, cfg.teacher_url, run.accelerator))
        metrics.update(step_throughput(run, batch, metrics, time.perf_counter() - t_step))
        saved = step if finish_step(cfg, run, step, metrics, episodes, batch.helped, nonfinite_steps, bar) \
            else saved
        if request.asked(run.accelerator):
            stop_when_asked(cfg, run, step, saved == step, request)
    run.meter.close()
    end_training(run)
    return run.log_path


def close_engines(run):
    """The in-process vLLM engines shut down while the process group they joined still exists: their
    teardown destroys vLLM's groups, and left to vLLM's exit handler, after accelerate had destroyed the
    world's, it failed with "Invalid process group specified" at the end of every run. Twice is harmless."""
    for engine in (run.student, run.teacher):
        if hasattr(engine, "close"):  # only an engine that holds resources of its own has one
            engine.close()


def end_training(run):
    """accelerate's end_training (trackers, then the process group) once every rank is past its last
    collective: gloo's workers drop a finished one's tensors only with the GIL, and a group destroyed
    meanwhile waits for them holding it (CPU ranks hung at exit in about one run in five)."""
    if run.accelerator.num_processes > 1:
        torch.distributed.barrier()
        time.sleep(0.2)  # the GIL released: workers finish dropping what the barrier waited for
    close_engines(run)
    run.accelerator.end_training()


def main(cfg):
    known = ()
    if cfg.eval_benchmarks:  # the names --eval-benchmarks may use (the evaluation stack loads only then)
        from benchmarks import BENCHMARKS as known
    validate(cfg, known)  # flags, the output folder, then the data: all before any model loads
    # one process writes a run folder: the main process holds OUT/lock until it exits, however it exits
    lock = checkpoint.take_lock(cfg.out_dir) if os.environ.get("RANK", "0") == "0" else None
    run = None
    try:
        if cfg.resume:  # the run continues as it was, but for the flags given: what config.json records
            checkpoint.continue_config(cfg)
        memory_check(cfg)  # on a GPU: a layout that cannot fit stops here
        with StopRequest(cfg.out_dir) as request:  # a scheduler's signal: stop with a checkpoint
            run = setup(cfg)
            return train_loop(cfg, run, request)
    finally:
        checkpoint.release_lock(lock)  # first: whatever the engines' teardown does, the folder is free
        if run is not None:  # a crash too: the engines before the process group
            close_engines(run)
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(parse_config())
