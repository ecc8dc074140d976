"""The paper's distillation baselines (ZPPO.md, "Baselines"): a per-token JSD to the teacher's next-token
distributions in place of ZPPO's PPO update, one optimizer step per rollout step.

    --algo off_distill  along the teacher's own correct rollouts (G_T per question, on the plain prompt)
    --algo on_distill   along the student's own plain rollouts

Everything else (data, G_S, G_T, lengths, optimizer, the buffer under --buffer, metrics, checkpoints, resume)
is train.py's: `distill_loop` is train.train_loop with this update in place of steps 2-10. The kernel that
computes the JSD without (tokens x vocabulary) logits is logprobs.ChunkedJSD.
"""
import time
from collections import Counter, defaultdict

from logprobs import response_jsd, unwrap
from metrics import step_metrics, teacher_metrics, teacher_tally
from reformulate import plain_prompt
from reward import score_rollouts
from train import finish_step, help_builder, oom_hint, replay, sample_groups, steps, sync_engine, timed
from zppo import (
    Episode,
    clip_gradients,
    drop_unreached,
    episodes,
    micro_batches,
    passes,
    reduce_sum,
)


def jsd_update(model, teacher_model, optimizer, accelerator, seqs, temperature, micro_batch_size, pad_id,
               beta, grad_clip, weights=None):
    """ONE optimizer step on sum_s weights[s] * (sum of the per-token JSD over the response tokens of s)
    (micro-batches accumulate into it); weights None: 1 / (all tokens of `seqs`), the token-level mean
    (On-Distill; Off-Distill's weights are off_distill_weights'). Over several processes each rank takes every
    world-th sequence, and every rank runs as many passes as the rank with the most (zppo.passes). No
    tokens, no step: AdamW would still move the weights (decay, momentum) with no loss. train/loss is the
    objective, train/jsd the token mean of the JSD over every token of `seqs` (the two agree for the
    token-level mean)."""
    world, rank = accelerator.num_processes, accelerator.process_index
    n_tokens = sum(len(s.token_ids) for s in seqs)  # seqs are the same on every rank
    if n_tokens == 0:
        return {"train/jsd": None, "train/loss": None, "train/grad_norm": 0.0, "count/distill_tokens": 0}
    weights = [1.0 / n_tokens] * len(seqs) if weights is None else weights
    micros = micro_batches(list(range(len(seqs)))[rank::world], seqs, micro_batch_size)
    jsd_sum, loss_sum, reached = 0.0, 0.0, False
    for j in range(passes(accelerator, len(micros))):
        micro = micros[j] if j < len(micros) else [0]
        reached = reached or any(seqs[i].vision is not None for i in micro)
        jsd, mask = response_jsd(model, teacher_model, [seqs[i] for i in micro], temperature, pad_id,
                                 beta)  # (b, R) each
        if j >= len(micros):  # a filler: the collectives of a pass, an exact zero gradient
            accelerator.backward(jsd.sum() * 0.0)
            continue
        row_sums = (jsd * mask).sum(-1)  # (b,)
        loss = (row_sums * row_sums.new_tensor([weights[i] for i in micro])).sum()
        jsd_sum += row_sums.sum().item()
        loss_sum += loss.item()
        accelerator.backward(loss * world)  # DDP / FSDP average over ranks: x world gives the sum
    drop_unreached(model, accelerator, reached)
    grad_norm = clip_gradients(model, grad_clip, accelerator)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    jsd_total, loss_total = reduce_sum(accelerator, [jsd_sum, loss_sum])
    return {"train/jsd": jsd_total / n_tokens, "train/loss": loss_total, "train/grad_norm": grad_norm,
            "count/distill_tokens": n_tokens}


OFF_DISTILL_MEANS = ("question", "token")


def off_distill_weights(targets, mean="question"):
    """Each Off-Distill target's weight in jsd_update. "question" (Alg. 2 l.10): a question's loss is the
    average over its N_x correct teacher targets of each one's per-token JSD (the mean over its tokens), so a
    question with four long targets weighs as much as one with a single short one; the step's loss is the
    plain mean of that over the questions with at least one target [our default: the paper leaves the
    cross-question aggregation open]. "token": one token mean over every target token of the step
    (--off-distill-mean token). Targets of one question share their group ("<id>/teacher")."""
    if mean not in OFF_DISTILL_MEANS:
        raise ValueError(f"--off-distill-mean must be one of {OFF_DISTILL_MEANS}, got {mean!r}")
    if mean == "token":
        return None
    per_question = Counter(t.group for t in targets)
    return [1.0 / (len(per_question) * per_question[t.group] * len(t.token_ids)) if t.token_ids else 0.0
            for t in targets]


def off_distill_targets(plain, teacher, **sampling):
    """Off-Distill's trajectories: `sampling["n"]` (G_T) fresh teacher rollouts per question on the plain
    prompt, the question's images included (pi_T(.|x), x = image + text), graded as in training (free-form
    gold answers by the teacher as judge); every correct one becomes an Episode on the student's own plain
    prompt (the plain group's prompt_ids and image inputs, so the JSD's forwards see the same x; the
    vocabulary is shared, so the teacher's token ids are the student's). A question without a correct teacher
    rollout adds nothing. Returns the episodes and the step's counts."""
    questions = [g.question for g in plain]
    teacher_groups = teacher.generate([plain_prompt(ex) for ex in questions], **sampling)
    teacher_rewards = score_rollouts(teacher_groups, questions, teacher)
    targets, missing = [], 0
    for g, rollouts, rewards in zip(plain, teacher_groups, teacher_rewards):
        correct = [r for r, reward in zip(rollouts, rewards) if reward]
        missing += not correct
        x = g.rollouts[0]
        targets += [Episode(x.prompt_ids, r.token_ids, 1.0, f"{g.question['id']}/teacher", "teacher",
                            vision=x.vision) for r in correct]
    n_rollouts = sum(map(len, teacher_rewards))
    return targets, {"count/off_distill": len(targets), "count/no_teacher_correct": missing,
                     "acc/teacher": len(targets) / n_rollouts if n_rollouts else 0.0}


def shared_teacher(teacher, tokenizer, model):
    """The distillation baselines' frozen teacher module, after checking that it can be compared with the
    student token by token: the same vocabulary (token -> id) and output heads of the same size."""
    teacher_model, teacher_tokenizer = getattr(teacher, "model", None), getattr(teacher, "tokenizer", None)
    if teacher_model is None or teacher_tokenizer is None:
        raise ValueError("distillation needs an in-process transformers teacher (--teacher-engine "
                         "transformers)")
    mine, theirs = tokenizer.get_vocab(), teacher_tokenizer.get_vocab()
    if mine != theirs:
        differ = sorted(set(mine.items()) ^ set(theirs.items()), key=str)[:3]
        raise ValueError("distillation compares next-token distributions id by id, so the teacher must share "
                         f"the student's tokenizer: the vocabularies differ ({len(mine)} vs {len(theirs)} "
                         f"tokens; e.g. {differ})")
    rows = unwrap(model).get_output_embeddings().weight.shape[0]
    teacher_rows = teacher_model.get_output_embeddings().weight.shape[0]
    if rows != teacher_rows:
        raise ValueError(f"distillation: the student's output head has {rows} rows and the teacher's "
                         f"{teacher_rows}; the same tokenizer with a differently padded head is not "
                         "supported")
    return teacher_model


def distill_loop(cfg, run):
    """train.train_loop with a JSD update: the presets turn BCQ, NCQ and (unless --buffer) the buffer off."""
    teacher_model = shared_teacher(run.teacher, run.tokenizer, run.model)
    build_help, data_pos = help_builder(cfg, run), run.data_pos
    for step in (bar := steps(cfg, run)):
        t_step, timer, tally = time.time(), defaultdict(float), teacher_tally(run.teacher)

        # 1. plain rollouts (no group the teacher helps with: that is ZPPO's and the Hint / Prefix baselines')
        plain, helped, n_new, facts, data_pos = sample_groups(cfg, run, build_help, data_pos, timer)
        eps = episodes(plain + helped, cfg.adv_norm)  # On-Distill distils along these

        # Off-Distill: G_T teacher rollouts on every question; the correct ones are the targets
        targets, counts = eps, {}
        if cfg.algo == "off_distill":
            with timed(timer, "teacher"):
                targets, counts = off_distill_targets(
                    plain, run.teacher, n=cfg.teacher_group_size, max_new_tokens=cfg.teacher_max_new_tokens,
                    temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k)

        # one optimizer step on the JSD to the teacher, then the engine's weight sync
        with timed(timer, "update"), oom_hint(cfg, targets):
            off = cfg.algo == "off_distill"
            weights = off_distill_weights(targets, cfg.off_distill_mean) if off else None
            metrics = jsd_update(run.model, teacher_model, run.optimizer, run.accelerator, targets,
                                 cfg.temperature, cfg.micro_batch_size, run.tokenizer.pad_token_id,
                                 cfg.jsd_beta, cfg.grad_clip, weights)
            sync_engine(cfg, run)

        # 11. the buffer, under --buffer (the paper's "(†)" rows); bookkeeping as train.py's
        metrics.update(replay(cfg, run, plain), **facts)
        metrics.update(step_metrics(cfg, plain, helped, eps, n_new, run.buffer), **counts,
                       **teacher_metrics(run.teacher, tally, step, cfg.teacher_url, run.accelerator))
        metrics.update({f"time/{k}": v for k, v in timer.items()}, **{"time/step": time.time() - t_step})
        finish_step(cfg, run, step, metrics, eps, helped, data_pos, 0, bar)
    run.accelerator.end_training()
    return run.log_path
