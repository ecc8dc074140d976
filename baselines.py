"""The paper's comparisons (ZPPO.md, "Baselines"): what each other method does differently from ZPPO.

    --algo zppo         BCQ + NCQ + buffer (the method; --no-bcq, --no-ncq, --no-buffer give its ablations)
    --algo grpo         no BCQ, no NCQ, no buffer (--buffer: GRPO†)
    --algo hint         + buffer; the teacher writes an answer-free hint for each hard question it can solve,
                        the student answers `question <hint> h </hint>` as a group of its own
    --algo prefix       + buffer; the student continues the first floor(0.4 L) of the L tokens of a correct
                        teacher rollout, as a group of its own; the prefix tokens carry no loss
    --algo off_distill  per-token JSD to the teacher along the teacher's own correct rollouts, one update a step
    --algo on_distill   per-token JSD to the teacher along the student's own rollouts, one update a step
Everything else (data, G_S, G_T, lengths, optimizer, metrics, checkpoints, resume) is train.py's, shared.
train.py's main calls the functions here at commented points; they take explicit arguments, no config.
"""
import math
import re
from collections import Counter

import torch

from reformulate import user_prompt, with_closer
from reward import after_thinking, score_rollouts
from zppo import (LOGITS_CHUNK_BYTES, ChunkedHead, Episode, _compute_dtype, _softmax_dtype, micro_batches,
                  padded_batch, reduce_sum, unwrap, with_head)

TEACHER_GUIDED = ("hint", "prefix")  # one extra group per capped hard question with a correct teacher rollout
DISTILLATION = ("off_distill", "on_distill")  # a JSD loss to the teacher's distributions instead of PPO
# Presets become parser defaults (an explicit flag wins). The spec's table: Hint and Prefix replay hard
# questions, GRPO and the distillation runs do not unless --buffer asks (the paper's "(†)" rows).
PRESETS = {
    "grpo": dict(buffer=False, bcq=False, ncq=False),
    "hint": dict(buffer=True, bcq=False, ncq=False),
    "prefix": dict(buffer=True, bcq=False, ncq=False),
    # distillation reads the teacher's full next-token distributions: an in-process transformers model
    "off_distill": dict(buffer=False, bcq=False, ncq=False, teacher_engine="transformers"),
    "on_distill": dict(buffer=False, bcq=False, ncq=False, teacher_engine="transformers"),
}


def check_algo(algo, teacher, teacher_url, teacher_engine, bcq, ncq, jsd_beta, prefix_frac):
    """Stop at start, with what to change, when a baseline cannot run with the teacher it was given."""
    if algo not in ("zppo", "grpo") and (bcq or ncq):
        raise ValueError(f"--algo {algo} has no BCQ/NCQ (they are ZPPO's); drop --bcq/--ncq")
    if algo == "hint" and teacher in (None, "gold"):
        raise ValueError("--algo hint: the teacher writes the hints, so it must be a model (--teacher NAME, in "
                         "process or with --teacher-url); gold solutions cannot write a hint")
    if algo == "prefix" and teacher is None:
        raise ValueError("--algo prefix needs --teacher: a model, or 'gold' (worked solutions as its rollouts)")
    if algo in DISTILLATION:
        if teacher in (None, "gold") or teacher_url:
            raise ValueError(f"--algo {algo} needs the teacher's full next-token distributions: an in-process "
                             "model (--teacher NAME without --teacher-url; a server returns only top-k log-probs, "
                             "and gold solutions have no distributions)")
        if teacher_engine != "transformers":
            raise ValueError(f"--algo {algo} reads the teacher's distributions from its transformers model: "
                             f"--teacher-engine transformers (got {teacher_engine})")
    if not 0 < jsd_beta < 1:
        raise ValueError(f"--jsd-beta must be in (0, 1) (0.5: the symmetric JSD), got {jsd_beta}")
    if not 0 < prefix_frac <= 1:
        raise ValueError(f"--prefix-frac must be in (0, 1], got {prefix_frac}")


# ---------------------------------------------------------------------------------------------------------
# Hint: the teacher's help as an answer-free hint inside the prompt

HINT_TEMPLATE = (
    "Read the solved response below and write a concise hint that helps solve the original question. "
    "Do NOT reveal the final answer, do NOT include any \\boxed{{}} expression, and do NOT copy the full "
    "solution. Keep only high-level guidance or the key intermediate idea. <response>\n{response} </response>"
)


def hint_prompt(response):
    return HINT_TEMPLATE.format(response=response)


def hinted_question(question, hint):
    """The student's prompt (before the closer): the question, then the hint in the paper's tags."""
    return f"{question} <hint> {hint} </hint>"


def hint_leaks(hint, gold):
    """A hint that gives the answer away: it holds a \\boxed{ or the gold answer as a whole word or number
    (so gold 7 leaks in "the sum is 7" but not in "17"). The paper does not filter them; we count them."""
    gold = str(gold).strip()
    whole = re.search(rf"(?<![\w.]){re.escape(gold)}(?![\w]|\.\d)", hint) if gold else None
    return "\\boxed{" in hint or whole is not None


def hint_instances(kept, teacher_correct, questions, teacher, rng, max_new_tokens):
    """The Hint baseline's prompts. For each capped hard question (`kept`, hardest first) with a correct teacher
    rollout (teacher_correct[i], fresh this step): one picked uniformly, the teacher writes a hint from it with
    the spec's hint prompt (greedy). The reply is the hint as written, except that a reasoning teacher's thinking
    (everything up to its last </think>, reward.after_thinking) is dropped [our default]: it is the teacher's
    scratch work, not the hint.
    Returns chosen [(i, "hint")], prompts (hinted questions, before the closer) and the hints."""
    picks = [(i, rng.choice(teacher_correct[i])) for i in kept if teacher_correct.get(i)]
    outs = teacher.generate([hint_prompt(r) for _, r in picks], n=1, max_new_tokens=max_new_tokens,
                            temperature=0.0, top_p=1.0, top_k=0) if picks else []
    chosen, prompts, hints = [], [], []
    for (i, _), out in zip(picks, outs):
        if not out:  # a remote teacher request that failed for good: no hint for this question this step
            continue
        hint = after_thinking(out[0].text)
        chosen.append((i, "hint"))
        prompts.append(hinted_question(questions[i]["question"], hint))
        hints.append(hint)
    return chosen, prompts, hints


# ---------------------------------------------------------------------------------------------------------
# Prefix: the teacher's help as the start of the student's answer
#
# How the prefix is kept out of the loss: it is given to the engine as `response_prefixes` (token ids appended
# after the chat-templated prompt, rollout.py), so each continuation's Episode has the prefix at the end of its
# prompt_ids and only the sampled tokens in token_ids. The update then needs nothing new: prompt tokens never
# reach the loss or the token count, the old log-probs and the sync check cover exactly the sampled tokens, and
# the model sees in training the very sequence it continued in sampling. (A mask over the first k response
# tokens would have touched every function of zppo.py that reads token_ids.)


def prefix_length(n, frac):
    """floor(frac * n), Alg. 6's p = (t_1 .. t_floor(alpha L)); the 1e-9 keeps a product such as 0.29 * 100
    (28.999999999999996 in floats) at its exact value."""
    return math.floor(frac * n + 1e-9)


def prefix_ids(rollout, tokenizer, frac, teacher_tokenizer=None):
    """The first floor(frac * L) of a correct teacher rollout's L tokens, as student token ids. L counts the
    teacher's own tokens as its engine returned them, less the end-of-sequence token that closes them (the
    prefix is the start of the answer's text). teacher_tokenizer None: the teacher shares the student's
    tokenizer and the ids are used as they are; a teacher with another tokenizer has its first floor(frac * L)
    tokens decoded and re-tokenized with the student's [our default]. A rollout without token ids (a worked
    solution under --teacher gold, a remote teacher's text) is tokenized with the student's tokenizer and cut
    there."""
    ids, source = list(rollout.token_ids), teacher_tokenizer or tokenizer
    if not ids:
        ids, source = tokenizer(rollout.text, add_special_tokens=False)["input_ids"], tokenizer
    elif ids[-1] in source.all_special_ids:
        ids = ids[:-1]
    cut = ids[:prefix_length(len(ids), frac)]
    if source is tokenizer:
        return cut
    return tokenizer(source.decode(cut, skip_special_tokens=True), add_special_tokens=False)["input_ids"]


def prefix_instances(kept, teacher_correct, questions, tokenizer, frac, rng, teacher_tokenizer=None):
    """The Prefix baseline's prompts: for each capped hard question with a correct teacher rollout
    (teacher_correct[i]: Rollouts), one picked uniformly and cut to the first floor(frac * L) of its tokens
    (prefix_ids). A question without a correct teacher rollout has its plain rollouts only. Returns chosen
    [(i, "prefix")], prompts (the plain questions, before the closer) and the prefixes (student token ids, one
    list per prompt)."""
    chosen, prompts, prefixes = [], [], []
    for i in kept:
        if teacher_correct.get(i):
            chosen.append((i, "prefix"))
            prompts.append(questions[i]["question"])
            prefixes.append(prefix_ids(rng.choice(teacher_correct[i]), tokenizer, frac, teacher_tokenizer))
    return chosen, prompts, prefixes


def guided_prompts(algo, kept, teacher_correct, questions, rng, teacher, hint_max_new_tokens, tokenizer,
                   prefix_frac, teacher_tokenizer=None):
    """hint_instances or prefix_instances, as (chosen, prompts, hints, prefixes); prefixes is None for Hint.
    teacher_correct[i] holds the correct teacher Rollouts of kept question i (Hint reads their texts)."""
    if algo == "hint":
        texts = {i: [r.text for r in rs] for i, rs in teacher_correct.items()}
        return (*hint_instances(kept, texts, questions, teacher, rng, hint_max_new_tokens), None)
    chosen, prompts, prefixes = prefix_instances(kept, teacher_correct, questions, tokenizer, prefix_frac, rng,
                                                 teacher_tokenizer)
    return chosen, prompts, [], prefixes


def guided_metrics(algo, seqs, chosen, questions, hints, prefixes):
    """acc/KIND and count/KIND for the Hint or Prefix group; count/hint_leak; len/prefix (tokens)."""
    if algo not in TEACHER_GUIDED:
        return {}
    rewards = [s.reward for s in seqs if s.kind == algo]
    metrics = {f"acc/{algo}": sum(rewards) / len(rewards) if rewards else 0.0, f"count/{algo}": len(chosen)}
    if algo == "hint":
        metrics["count/hint_leak"] = sum(hint_leaks(h, questions[i]["answer"]) for h, (i, _) in zip(hints, chosen))
    else:
        metrics["len/prefix"] = sum(map(len, prefixes)) / len(prefixes) if prefixes else 0.0
    return metrics


# ---------------------------------------------------------------------------------------------------------
# Distillation: the generalized Jensen-Shannon divergence to the teacher, per token


def generalized_jsd(student_logp, teacher_logp, beta=0.5):
    """Per-position generalized JSD of GKD (Agarwal et al., 2024) from log-probs (..., V) -> (...):
        M = beta T + (1 - beta) S,   JSD = beta KL(T || M) + (1 - beta) KL(S || M)
    0 for identical distributions, symmetric in S and T at beta 0.5, at most the binary entropy of beta.
    The paper does not give beta; 0.5 is our default (--jsd-beta)."""
    log_m = torch.logsumexp(torch.stack([teacher_logp + math.log(beta), student_logp + math.log(1 - beta)]), dim=0)
    kl_t = (teacher_logp.exp() * (teacher_logp - log_m)).sum(-1)
    kl_s = (student_logp.exp() * (student_logp - log_m)).sum(-1)
    return beta * kl_t + (1 - beta) * kl_s


class ChunkedJSD(torch.autograd.Function):
    """generalized_jsd between softmax(h W^T / T) (the student: hidden states h (N, H), head W (V, H)) and
    softmax(h_t W_t^T / T) (the frozen teacher), per position, without ever holding (N, V) logits of either
    model: chunks of positions go through both heads one at a time and backward recomputes each chunk, as
    zppo.ChunkedHead does for the log-probs. Returns (N,) in fp32 (fp64 for fp64 weights).

    Gradient, for the student's z = h W^T / T, s = softmax(z) and m = beta t + (1 - beta) s:
        dJSD / ds = (1 - beta) (log s - log m)      (the other terms sum to a constant, which softmax removes)
        dJSD / dz = s * (g - <s, g>)  with g = (1 - beta) (log s - log m)
    then dh = dz W / T and dW = dz^T h / T; the teacher gets none."""

    @staticmethod
    def _logps(h, weight, th, tweight, temperature, dtype):
        student = torch.log_softmax(ChunkedHead._logits(h, weight, temperature, dtype), dim=-1)
        tdtype = torch.promote_types(th.dtype, tweight.dtype)
        teacher = torch.log_softmax(ChunkedHead._logits(th, tweight, temperature, tdtype), dim=-1)
        return student, teacher.to(student.dtype)

    @staticmethod
    def forward(ctx, hidden, weight, teacher_hidden, teacher_weight, temperature, beta, chunk):
        dtype = _compute_dtype(hidden, weight)
        out = torch.empty(hidden.shape[0], dtype=_softmax_dtype(dtype), device=hidden.device)
        for i in range(0, hidden.shape[0], chunk):
            s, t = ChunkedJSD._logps(hidden[i:i + chunk], weight, teacher_hidden[i:i + chunk], teacher_weight,
                                     temperature, dtype)
            out[i:i + chunk] = generalized_jsd(s, t, beta)
        ctx.save_for_backward(hidden, weight, teacher_hidden, teacher_weight)
        ctx.temperature, ctx.beta, ctx.chunk, ctx.dtype = temperature, beta, chunk, dtype
        return out

    @staticmethod
    def backward(ctx, grad_out):
        hidden, weight, teacher_hidden, teacher_weight = ctx.saved_tensors
        T, beta, chunk, dtype = ctx.temperature, ctx.beta, ctx.chunk, ctx.dtype
        grad_h = torch.empty_like(hidden)
        grad_w = torch.zeros(weight.shape, dtype=_softmax_dtype(dtype), device=weight.device)
        for i in range(0, hidden.shape[0], chunk):
            h = hidden[i:i + chunk]
            s, t = ChunkedJSD._logps(h, weight, teacher_hidden[i:i + chunk], teacher_weight, T, dtype)
            log_m = torch.logsumexp(torch.stack([t + math.log(beta), s + math.log(1 - beta)]), dim=0)
            g = (s - log_m).mul_(1 - beta)
            p = s.exp_()
            dz = g.sub_((p * g).sum(-1, keepdim=True)).mul_(p).mul_(grad_out[i:i + chunk, None] / T).to(dtype)
            with torch.autocast(h.device.type, enabled=False):
                grad_h[i:i + chunk] = (dz @ weight.to(dtype)).to(hidden.dtype)
                grad_w += dz.T @ h.to(dtype)
        return grad_h, grad_w.to(weight.dtype), None, None, None, None, None


def response_jsd(model, teacher_model, seqs, temperature, pad_id, beta=0.5, chunk_tokens=None):
    """Per-token generalized JSD between the student's (`model`, with gradient) and the frozen teacher's
    next-token distributions at every response token of `seqs`: (B, R) and the response mask (B, R).
    Teacher and student read the same token ids (a shared vocabulary, checked at start by shared_teacher).
    The teacher's forward keeps only its last hidden states (B, R, H_t), without gradient; the student's
    output head then runs ChunkedJSD on its own hidden states and the teacher's, so neither model's
    (tokens x vocabulary) logits are ever held beyond one chunk."""
    inputs, mask = padded_batch(model, seqs, pad_id)
    R = mask.shape[1]
    with torch.no_grad():  # the teacher lives on the student's device (frozen_engine puts it there)
        teacher_hidden = with_head(teacher_model, lambda hidden: hidden[:, :-1], **inputs)  # (B, R, H_t)
    teacher_weight = unwrap(teacher_model).get_output_embeddings().weight
    head = unwrap(model).get_output_embeddings()
    # two models' fp32 log-probs (and their mixture) per chunk: a third of the log-prob pass's chunk
    chunk = chunk_tokens or max(1, LOGITS_CHUNK_BYTES // (12 * head.weight.shape[0]))

    def head_forward(hidden):  # hidden (B, R+1, H): position P-1+k predicts response token k
        h = hidden[:, :-1].reshape(-1, hidden.shape[-1])
        th = teacher_hidden.reshape(-1, teacher_hidden.shape[-1])
        return ChunkedJSD.apply(h, head.weight, th, teacher_weight, temperature, beta, chunk).view(len(seqs), R)

    return with_head(model, head_forward, **inputs), mask


def jsd_update(model, teacher_model, optimizer, accelerator, seqs, temperature, micro_batch_size, pad_id, beta,
               grad_clip, weights=None):
    """The distillation baselines' update: ONE optimizer step on sum_s weights[s] * (sum of the per-token JSD
    over the response tokens of s) (micro-batches accumulate into it); weights None: 1 / (all tokens of `seqs`),
    the token-level mean (On-Distill; Off-Distill's weights are off_distill_weights'). Over several processes each
    rank takes every world-th sequence and its loss is multiplied by the world size (DDP/FSDP average
    gradients), with filler micro-batches so the collectives stay in step, as in zppo.ppo_update. No tokens, no
    step: AdamW would still move the weights (decay, momentum) with no loss. train/loss is the objective,
    train/jsd the token mean of the JSD over every token of `seqs` (the two agree for the token-level mean)."""
    world, rank = accelerator.num_processes, accelerator.process_index
    n_tokens = sum(len(s.token_ids) for s in seqs)  # seqs are the same on every rank
    if n_tokens == 0:
        return {"train/jsd": None, "train/loss": None, "train/grad_norm": 0.0, "count/distill_tokens": 0}
    weights = [1.0 / n_tokens] * len(seqs) if weights is None else weights
    weight_of = {id(s): w for s, w in zip(seqs, weights)}  # micro_batches reorders the sequences
    micros = micro_batches(seqs[rank::world], micro_batch_size)
    n_micro = len(micros)
    if world > 1:
        n_micro = int(accelerator.gather(torch.tensor([n_micro], device=accelerator.device)).max())
    jsd_sum, loss_sum = 0.0, 0.0
    for j in range(n_micro):
        micro = micros[j] if j < len(micros) else seqs[:1]
        jsd, mask = response_jsd(model, teacher_model, micro, temperature, pad_id, beta)  # (b, R) each
        if j >= len(micros):
            accelerator.backward(jsd.sum() * 0.0)  # a filler: no gradient, same collectives
            continue
        row_sums = (jsd * mask).sum(-1)  # (b,)
        w = torch.tensor([weight_of[id(s)] for s in micro], dtype=row_sums.dtype, device=row_sums.device)
        loss = (row_sums * w).sum()
        accelerator.backward(loss * world)
        jsd_sum += row_sums.sum().item()
        loss_sum += loss.item()
    grad_norm = float(accelerator.clip_grad_norm_(model.parameters(), grad_clip))
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    jsd_total, loss_total = reduce_sum(accelerator, [jsd_sum, loss_sum])
    return {"train/jsd": jsd_total / n_tokens, "train/loss": loss_total, "train/grad_norm": grad_norm,
            "count/distill_tokens": n_tokens}


OFF_DISTILL_MEANS = ("question", "token")


def off_distill_weights(targets, mean="question"):
    """Each Off-Distill target's weight in jsd_update. "question" (Alg. 2 l.10): a question's loss is the average
    over its N_x correct teacher targets of each one's per-token JSD (the mean over its tokens), so a question
    with four long targets weighs as much as one with a single short one; the step's loss is the plain mean of
    that over the questions with at least one target [our default: the paper leaves the cross-question
    aggregation open]. "token": one token mean over every target token of the step (--off-distill-mean token).
    Targets of one question share their group ("<id>/teacher")."""
    if mean not in OFF_DISTILL_MEANS:
        raise ValueError(f"--off-distill-mean must be one of {OFF_DISTILL_MEANS}, got {mean!r}")
    if mean == "token":
        return None
    per_question = Counter(t.group for t in targets)
    return [1.0 / (len(per_question) * per_question[t.group] * len(t.token_ids)) if t.token_ids else 0.0
            for t in targets]


def off_distill_targets(questions, plain, teacher, grade_fn, **sampling):
    """Off-Distill's trajectories: `sampling["n"]` (G_T) fresh teacher rollouts per question on the plain
    prompt, the question's images included (pi_T(.|x), x = image + text), graded with grade_fn (free-form gold
    answers by the teacher as judge, as in training); every correct one becomes an Episode on the student's own
    plain prompt (plain[i][0].prompt_ids and its image inputs, so the JSD's forwards see the same x; the
    vocabulary is shared, so the teacher's token ids are the student's). A question without a correct teacher
    rollout adds nothing. Returns the episodes and the step's counts."""
    teacher_groups = teacher.generate([user_prompt(ex, with_closer(ex["question"])) for ex in questions], **sampling)
    teacher_rewards = score_rollouts(teacher_groups, questions, teacher, grade_fn)
    targets, missing = [], 0
    for ex, group, rollouts, rewards in zip(questions, plain, teacher_groups, teacher_rewards):
        correct = [r for r, reward in zip(rollouts, rewards) if reward]
        missing += not correct
        targets += [Episode(group[0].prompt_ids, r.token_ids, 1.0, f"{ex['id']}/teacher", "teacher",
                            vision=group[0].vision) for r in correct]
    n_rollouts = sum(map(len, teacher_rewards))
    return targets, {"count/off_distill": len(targets), "count/no_teacher_correct": missing,
                     "acc/teacher": len(targets) / n_rollouts if n_rollouts else 0.0}


def shared_teacher(teacher, tokenizer, model):
    """The distillation baselines' frozen teacher module, after checking that it can be compared with the
    student token by token: the same vocabulary (token -> id) and output heads of the same size."""
    teacher_model, teacher_tokenizer = getattr(teacher, "model", None), getattr(teacher, "tokenizer", None)
    if teacher_model is None or teacher_tokenizer is None:
        raise ValueError("distillation needs an in-process transformers teacher (--teacher-engine transformers)")
    mine, theirs = tokenizer.get_vocab(), teacher_tokenizer.get_vocab()
    if mine != theirs:
        differ = sorted(set(mine.items()) ^ set(theirs.items()), key=str)[:3]
        raise ValueError(f"distillation compares next-token distributions id by id, so the teacher must share "
                         f"the student's tokenizer: the vocabularies differ ({len(mine)} vs {len(theirs)} tokens; "
                         f"e.g. {differ})")
    rows = unwrap(model).get_output_embeddings().weight.shape[0]
    teacher_rows = teacher_model.get_output_embeddings().weight.shape[0]
    if rows != teacher_rows:
        raise ValueError(f"distillation: the student's output head has {rows} rows and the teacher's "
                         f"{teacher_rows}; the same tokenizer with a differently padded head is not supported")
    return teacher_model
