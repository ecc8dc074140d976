"""The paper's baselines, all on ZPPO's own loop (train.py), each one command (docs/training.md lists every
row of the paper's tables):

    --algo grpo               plain rollouts only: no BCQ, no NCQ, no replay (config.PRESETS)
    --algo grpo --buffer      GRPO with ZPPO's replay buffer (the paper's "(dagger)" rows)
    --algo hint               the teacher writes a hint from its correct rollout, into the student's prompt
    --algo prefix             the start of a correct teacher rollout begins the student's answer
    --algo on_distill         a per-token JSD to the teacher along the student's own rollouts
    --algo off_distill        the same JSD along the teacher's own correct rollouts

Hint and Prefix build groups of the same shape as BCQ/NCQ's (reformulate.bcq_ncq_groups) and train with
ZPPO's PPO update; the distillation baselines replace that update with one step on the JSD (`distill_step`).
"""
import math
import re
from collections import Counter

from logprobs import response_jsd, unwrap
from reformulate import plain_prompt
from reward import after_thinking, score_rollouts
from zppo import Episode, Group, clip_gradients, drop_unreached, micro_batches, passes, reduce_sum


def mean(xs):
    xs = list(xs)
    return sum(xs) / len(xs) if xs else 0.0


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


def hint_groups(plain, kept, correct, rng, teacher, max_new_tokens):
    """The Hint baseline's groups. For each capped hard question (`kept`, hardest first) with a correct
    teacher rollout (correct[i], fresh this step): one picked uniformly, the teacher writes a hint from it
    with the spec's hint prompt (greedy). The reply is the hint as written, except that a reasoning teacher's
    thinking (everything up to its last </think>, reward.after_thinking) is dropped [our default]: it is the
    teacher's scratch work, not the hint. A remote request that failed for good gives no hint for that
    question."""
    picks = [(i, rng.choice(correct[i]).text) for i in kept if correct.get(i)]
    outs = teacher.generate([hint_prompt(r) for _, r in picks], n=1, max_new_tokens=max_new_tokens,
                            temperature=0.0, top_p=1.0, top_k=0) if picks else []
    hints = [(i, after_thinking(out[0].text)) for (i, _), out in zip(picks, outs) if out]
    return [Group(plain[i].question, "hint", hinted_question(plain[i].text, h), hint=h) for i, h in hints]


# ---------------------------------------------------------------------------------------------------------
# Prefix: the teacher's help as the start of the student's answer
#
# How the prefix is kept out of the loss: it is given to the engine as `response_prefixes` (token ids appended
# after the chat-templated prompt, rollout.py), so each continuation's Episode has the prefix at the end of
# its prompt_ids and only the sampled tokens in token_ids. The update then needs nothing new: prompt tokens
# never reach the loss or the token count, the old log-probs and the sync check cover exactly the sampled
# tokens, and the model sees in training the very sequence it continued in sampling. (A mask over the first k
# response tokens would have touched every function of zppo.py that reads token_ids.)


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


def prefix_groups(plain, kept, correct, rng, tokenizer, frac, teacher_tokenizer=None):
    """The Prefix baseline's groups: for each capped hard question with a correct teacher rollout
    (correct[i]), one picked uniformly and cut to the first floor(frac * L) of its tokens (prefix_ids); the
    student continues it after the plain question. A question without a correct teacher rollout has its plain
    rollouts only."""
    return [Group(plain[i].question, "prefix", plain[i].text,
                  prefix=prefix_ids(rng.choice(correct[i]), tokenizer, frac, teacher_tokenizer))
            for i in kept if correct.get(i)]


def baseline_metrics(algo, helped):
    """The Hint / Prefix baseline's own numbers: acc/hint and count/hint (leaks counted), or acc/prefix,
    count/prefix and len/prefix."""
    if algo not in ("hint", "prefix"):
        return {}
    out = {f"acc/{algo}": mean(r for g in helped for r in g.rewards), f"count/{algo}": len(helped)}
    if algo == "hint":
        out["count/hint_leak"] = sum(hint_leaks(g.hint, g.question["answer"]) for g in helped)
    else:
        out["len/prefix"] = mean(len(g.prefix) for g in helped)
    return out


# ---------------------------------------------------------------------------------------------------------
# On- and Off-Distill: a per-token JSD to the teacher's next-token distributions in place of PPO, one
# optimizer step per rollout step. The kernel computing it without (tokens x vocabulary) logits is
# logprobs.ChunkedJSD.

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


def off_distill_targets(plain, teacher, judge=None, **sampling):
    """Off-Distill's trajectories: `sampling["n"]` (G_T) fresh teacher rollouts per question on the plain
    prompt, the question's images included (pi_T(.|x), x = image + text), graded as in training (free-form
    gold answers by the teacher as judge); every correct one becomes an Episode on the student's own plain
    prompt (the plain group's prompt_ids and image inputs, so the JSD's forwards see the same x; the
    vocabulary is shared, so the teacher's token ids are the student's). A question without a correct teacher
    rollout adds nothing. Returns the episodes and the step's counts."""
    questions = [g.question for g in plain]
    teacher_groups = teacher.generate([plain_prompt(ex) for ex in questions], **sampling)
    teacher_rewards = score_rollouts(teacher_groups, questions, judge or teacher)
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


def distill_step(cfg, run, plain, eps):
    """Step 10 of the distillation baselines: On-Distill along the step's own episodes (the student's plain
    rollouts), Off-Distill along G_T fresh teacher rollouts per question, the correct ones (their teacher
    calls timed as "teacher", inside the update's time); then ONE optimizer step on the JSD. Returns the
    update's metrics and counts."""
    targets, counts = eps, {}
    if cfg.algo == "off_distill":
        with run.meter.phase("teacher"):
            targets, counts = off_distill_targets(
                plain, run.teacher, run.helper, n=cfg.teacher_group_size,
                max_new_tokens=cfg.teacher_max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                top_k=cfg.top_k)
    weights = off_distill_weights(targets, cfg.off_distill_mean) if cfg.algo == "off_distill" else None
    metrics = jsd_update(run.model, shared_teacher(run.teacher, run.tokenizer, run.model), run.optimizer,
                         run.accelerator, targets, cfg.temperature, cfg.micro_batch_size,
                         run.tokenizer.pad_token_id, cfg.jsd_beta, cfg.grad_clip, weights)
    # the student's forward and backward tokens (the teacher's forward is another model's)
    counts["tokens/update"] = sum(len(t.prompt_ids) + len(t.token_ids) for t in targets)
    return {**metrics, **counts}
