"""ZPPO's optimisation: the step's groups, their advantages (REINFORCE++ two-step), the clipped policy loss,
the mini-batch plan, the update and the sync check. Spec (docs/ZPPO.md) steps 8 to 10.

Values in, values out: a step's `Group`s become `Episode`s with their advantages (`episodes_of`), the plan is
returned by `plan_minibatches`, the sampling policy's log-probs by `old_logprobs`, and `ppo_update` takes all
three. The formulas are checked by hand in tests/test_zppo.py; the log-prob kernel is logprobs.py's.
"""
import math
import warnings
from collections import defaultdict
from dataclasses import dataclass, field

import torch

from logprobs import pass_tokens, response_logprobs


@dataclass(frozen=True)
class Group:
    """One advantage group (spec step 8): the student's rollouts of one prompt about one question, and their
    rewards against the question's gold answer. The plain, BCQ and NCQ prompts (or Hint, Prefix) of a question
    are separate groups. Built without rollouts by the prompt builders, answered with dataclasses.replace."""
    question: dict  # the example: id, question, answer, images, ...
    kind: str  # "plain", "bcq", "ncq", "hint" or "prefix"
    text: str  # the user text before the closer (the plain question, or the reformulated one)
    prefix: list = None  # Prefix: the answer's start (student token ids), part of the prompt, never trained
    hint: str = None  # Hint: the teacher's hint inside `text` (counted for leaks)
    rollouts: list = field(default_factory=list)  # the student's G_S Rollouts
    rewards: list = field(default_factory=list)  # 0/1 each

    @property
    def id(self):
        return f"{self.question['id']}/{self.kind}"


@dataclass(frozen=True)
class Episode:
    """One student rollout of the step batch, with everything the update needs."""
    prompt_ids: list  # chat-templated prompt tokens (plain, BCQ or NCQ prompt; Prefix's prefix at its end)
    token_ids: list  # the sampled response tokens; the only tokens that enter the gradient
    reward: float = 0.0  # binary reward against the original question's gold answer
    group: str = ""  # its advantage group, "<question id>/<kind>"
    kind: str = "plain"
    adv: float = 0.0  # step 9: one scalar, broadcast to every token
    engine_logprobs: list = field(default_factory=list)  # the engine's log-probs when sampling (sync check)
    vision: dict = None  # the prompt's image inputs (pixel_values, image_grid_thw); None for a text prompt


def episodes_of(groups, norm="without_zero"):
    """Spec steps 8-9: every rollout of every group as an Episode with its group's advantage."""
    flat = [(g, r, reward) for g in groups for r, reward in zip(g.rollouts, g.rewards)]
    advantages = compute_advantages([reward for _, _, reward in flat], [g.id for g, _, _ in flat], norm=norm)
    return [Episode(r.prompt_ids, r.token_ids, reward, g.id, g.kind, a, r.logprobs, r.vision)
            for (g, r, reward), a in zip(flat, advantages.tolist())]


ADV_NORMS = ("without_zero", "with_zero", "none")


def compute_advantages(rewards, group_ids, norm="without_zero", epsilon=1e-6):
    """One scalar advantage per rollout.

    Step 1: A' = r - mean(r of its group); no per-group std division, so a group of 1/8 and a group of
    7/8 keep different magnitudes. Step 2 ("without_zero", the paper's default): normalise A' by the
    mean and std taken over rollouts of non-trivial groups only (reward std > 0). Trivial groups (all
    right or all wrong) carry no signal and keep A = 0; counting them in the statistics ("with_zero")
    would shrink sigma as more groups go trivial. "none" stops after step 1.
    """
    if norm not in ADV_NORMS:
        raise ValueError(f"norm must be one of {ADV_NORMS}, got {norm!r}")
    rewards = torch.as_tensor(rewards, dtype=torch.float32)
    if rewards.numel() == 0:
        return rewards.clone()
    if not torch.is_tensor(group_ids):
        # group ids may be any hashable (strings in train.py); map them to 0..G-1
        index = {}
        group_ids = torch.tensor([index.setdefault(g, len(index)) for g in group_ids])
    _, inverse = torch.unique(group_ids, return_inverse=True)
    n_groups = int(inverse.max()) + 1
    counts = torch.zeros(n_groups).index_add_(0, inverse, torch.ones_like(rewards))
    means = torch.zeros(n_groups).index_add_(0, inverse, rewards) / counts
    centred = rewards - means[inverse]
    if norm == "none":
        return centred
    # a group is non-trivial when its rewards are not all equal (std > 0)
    lo = torch.full((n_groups,), float("inf")).scatter_reduce(0, inverse, rewards, "amin")
    hi = torch.full((n_groups,), float("-inf")).scatter_reduce(0, inverse, rewards, "amax")
    nontrivial = (hi > lo)[inverse]
    if norm == "with_zero":
        mu, sigma = centred.mean(), centred.std(correction=0)
        return (centred - mu) / (sigma + epsilon)
    if not nontrivial.any():
        return torch.zeros_like(rewards)
    sel = centred[nontrivial]
    mu, sigma = sel.mean(), sel.std(correction=0)
    return torch.where(nontrivial, (centred - mu) / (sigma + epsilon), torch.zeros_like(centred))


def policy_loss(logprobs, old_logprobs, advantages, mask, clip_low=0.2, clip_high=0.28, dual_clip=10.0,
                num_tokens=None):
    """PPO clipped surrogate with clip-higher and dual-clip, averaged over tokens.

    logprobs, old_logprobs, mask: (B, T); advantages: (B,), one scalar per sequence broadcast to its tokens.
    Token-level aggregation: the sum over all unmasked tokens divided by their count, so a long
    response weighs in proportion to its length (not one vote per sequence). `num_tokens` overrides
    the divisor when one mini-batch is split into micro-batches for memory.
    Clip-higher (1 + 0.28 above, 1 - 0.2 below) leaves room for unlikely tokens to grow; dual-clip
    bounds the loss of a negative-advantage token whose ratio has exploded to dual_clip * |A|.
    """
    mask = mask.to(logprobs.dtype)
    adv = advantages.unsqueeze(-1).to(logprobs.dtype).expand_as(logprobs)
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    surr1 = ratio * adv
    surr2 = torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high) * adv
    token_loss = -torch.min(surr1, surr2)
    negative = adv < 0
    token_loss = torch.where(negative, torch.minimum(token_loss, -dual_clip * adv), token_loss)
    denom = mask.sum() if num_tokens is None else torch.as_tensor(num_tokens, dtype=mask.dtype)
    denom = denom.clamp(min=1.0)
    loss = (token_loss * mask).sum() / denom

    with torch.no_grad():
        n = mask.sum().clamp(min=1.0)
        frac = lambda cond: ((cond.to(mask.dtype) * mask).sum() / n).item()
        metrics = {
            # the clip is active (gradient zero) only on the side where it binds for that sign of A
            "clip_frac_low": frac(negative & (ratio < 1.0 - clip_low)),
            "clip_frac_high": frac((adv > 0) & (ratio > 1.0 + clip_high)),
            "clip_frac_dual": frac(negative & (ratio > dual_clip)),
            # k3 estimator of KL(old || new) on the sampled tokens: (r - 1) - log r >= 0
            "approx_kl": (((ratio - 1.0) - log_ratio) * mask).sum().item() / n.item(),
            "ratio_mean": ((ratio * mask).sum() / n).item(),
        }
    return loss, metrics




@dataclass(frozen=True)
class Plan:
    """Spec step 10's split of the step batch into I mini-batches (episode indices, the same on every rank)
    and this rank's part of the work."""
    minibatches: list  # I lists of episode indices, in step order
    computed: list  # per episode: does its forward/backward run? (False for A = 0 under skip_zero_adv)
    rank_work: list  # per mini-batch, the computed episodes this rank runs
    rank_logprobs: list  # the episodes whose sampling-policy log-probs this rank computes (old_logprobs)


def plan_minibatches(episodes, iters, rng, rank=0, world=1, skip_zero_adv=True, all_logprobs=True,
                     share=False):
    """The whole step batch shuffled into I equal mini-batches; every rank takes every world-th sequence of a
    mini-batch that enters the gradient. A sequence with A = 0 adds exactly zero loss and zero gradient, so
    with skip_zero_adv it is not computed at all; its tokens still count in the token-level mean, so the
    gradient is identical, only cheaper (early on most groups are trivial). With all_logprobs its sampling
    log-probs are still computed, by one rank each (`rank_logprobs`), so the entropy and the sync check
    cover every rollout. Without, only what the loss needs: the computed sequences of mini-batches 2..I (the
    first one's weights are still the sampling policy's: ppo_update takes its own log-probs). With `share`
    (responses to one prompt share its pass: logprobs.shared_batch) each rank takes a contiguous run of the
    mini-batch's sequences in prompt order, so a prompt's rollouts stay together rather than one per rank."""
    order = list(range(len(episodes)))
    rng.shuffle(order)
    I = min(iters, len(order))
    computed = [not skip_zero_adv or e.adv != 0 for e in episodes]
    minibatches, work = [], []
    for k in range(I):
        mb = order[k * len(order) // I:(k + 1) * len(order) // I]
        minibatches.append(sorted(mb))
        mine = [i for i in mb if computed[i]]
        if share:  # rank r: the r-th of `world` near-equal runs in prompt order
            mine = sorted(mine, key=lambda i: by_prompt(episodes[i]))
            mine = mine[rank * len(mine) // world:(rank + 1) * len(mine) // world]
        else:
            mine = mine[rank::world]
        work.append(sorted(mine))
    skipped = [i for i in range(len(episodes)) if not computed[i]]
    logprobs = {i for w in work for i in w} | set(skipped[rank::world]) if all_logprobs else \
        {i for w in work[1:] for i in w}
    return Plan(minibatches, computed, work, sorted(logprobs))


def reduce_sum(accelerator, values):
    """Sum a list of floats over all ranks."""
    t = torch.tensor(values, dtype=torch.float64, device=accelerator.device)
    return (accelerator.reduce(t, "sum") if accelerator.num_processes > 1 else t).tolist()


def weight_spread(model, accelerator):
    """DDP keeps the ranks' replicas identical; check it cheaply: max - min over ranks of the sum of all
    weights. Under FSDP each rank holds other shards (DTensors), no replica: None."""
    from torch.distributed.tensor import DTensor

    if accelerator.num_processes == 1 or any(isinstance(p, DTensor) for p in model.parameters()):
        return None
    checksum = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum().reshape(1)
    sums = accelerator.gather(checksum)
    return (sums.max() - sums.min()).item()


def passes(accelerator, n):
    """How many passes each rank runs in a phase where this rank has n: the most any rank has. A backward runs
    collectives under DDP and FSDP (gradient reduction), and under FSDP every forward does too (it gathers
    the parameters): ranks that ran different numbers of passes would wait on each other for ever (a hang
    on GPUs). A rank with fewer makes up the difference with passes over a filler that keep nothing."""
    if accelerator.num_processes == 1:
        return n
    return int(accelerator.gather(torch.tensor([n], device=accelerator.device)).max())


def by_prompt(episode):
    """A sort key that puts the rollouts of one prompt next to each other, prompts of similar length close."""
    return len(episode.prompt_ids), tuple(episode.prompt_ids), len(episode.token_ids)


def micro_batches(indices, episodes, size, share=False):
    """Episode indices in chunks of `size`, of similar length (sorted), so little compute goes to padding;
    with `share`, the rollouts of one prompt together (they share its pass: logprobs.shared_batch)."""
    order = sorted(indices, key=lambda i: by_prompt(episodes[i]) if share else
                   (len(episodes[i].prompt_ids), len(episodes[i].token_ids)))
    return [order[i:i + size] for i in range(0, len(order), size)]


def shortest(episodes):
    """The index of the cheapest episode: what a filler forward runs."""
    return min(range(len(episodes)), key=lambda i: len(episodes[i].prompt_ids + episodes[i].token_ids))


@torch.no_grad()
def old_logprobs(model, episodes, plan, temperature, micro_batch_size, pad_id, accelerator, share=False):
    """The sampling policy's log-probs (the weights before this step's updates) of this rank's episodes
    (plan.rank_logprobs), as {episode index: per-token list}, this rank's [entropy sum, tokens] of the
    policy over them (mean_entropy adds the ranks' and ppo_update's own), and the tokens its passes ran."""
    model.eval()
    old, ent_sum, n_tok, ran = {}, 0.0, 0.0, 0
    micros = micro_batches(plan.rank_logprobs, episodes, micro_batch_size, share)
    for j in range(passes(accelerator, len(micros))):
        micro = micros[j] if j < len(micros) else [shortest(episodes)]  # a filler: the ranks' gathers match
        seqs = [episodes[i] for i in micro]
        lp, mask, ent = response_logprobs(model, seqs, temperature, pad_id, entropy=True, share=share)
        if j >= len(micros):
            continue
        ran += pass_tokens(seqs, share)
        for b, i in enumerate(micro):  # (b, R) each
            old[i] = lp[b, :len(episodes[i].token_ids)].tolist()
        ent_sum += (ent * mask).sum().item()
        n_tok += mask.sum().item()
    model.train()
    return old, [ent_sum, n_tok], ran


def mean_entropy(accelerator, *sums):
    """The policy's mean token entropy from [sum, tokens] pairs, all ranks together (None: no tokens)."""
    ent_sum, n_tok = reduce_sum(accelerator, [sum(s[0] for s in sums), sum(s[1] for s in sums)])
    return ent_sum / n_tok if n_tok else None


def sync_check(episodes, old, threshold, step, accelerator):
    """Mean |engine log-prob - trainer log-prob| over the tokens of this step's rollouts (each rank its
    share). Both are the sampling policy's, so the gap is numerical noise unless the engine samples from stale
    or wrong weights: a silent weight-sync failure shows up here (the engine's own check after each reload,
    rollout.VLLMEngine.sync_weights, is the first line)."""
    diffs = [abs(a - b) for i, lps in sorted(old.items()) if len(episodes[i].engine_logprobs) == len(lps)
             for a, b in zip(episodes[i].engine_logprobs, lps)]
    total, count = reduce_sum(accelerator, [sum(diffs), len(diffs)])
    gap = total / count if count else None
    if gap is not None and gap > threshold:
        warnings.warn(f"step {step}: engine and trainer log-probs differ by {gap:.3f} per token (> "
                      f"{threshold}); is the engine sampling from the current weights?")
    return gap


def coverage_filler(members, episodes, computed):
    """The zero-weight micro-batch (episode indices) a mini-batch needs when skip_zero_adv left out every
    sequence that would have reached some parameters: all of them (every A = 0), or all its image ones (the
    vision tower). Without the skip those parameters get an exact zero gradient and AdamW steps them (step
    count, moments, weight decay); with no gradient at all it would leave them behind. None when nothing is
    missing."""
    images = [i for i in members if episodes[i].vision is not None]
    if members and not any(computed[i] for i in members):
        return (images or members)[:1]
    if images and not any(computed[i] for i in images):
        return images[:1]
    return None


def pad_rows(rows, width, device):
    out = torch.zeros(len(rows), width, device=device)
    for b, r in enumerate(rows):
        out[b, :len(r)] = torch.tensor(r[:width], device=device)
    return out


def clipped_loss(model, seqs, old, n_tokens, temperature, pad_id, clip_low, clip_high, dual_clip,
                 share=False):
    """One micro-batch's share of its mini-batch's loss (its token sum over the mini-batch's `n_tokens`) and
    the policy metrics' sums over its A != 0 tokens (`tokens`: their count). `old`: each sequence's
    sampling-policy log-probs, or None where the weights still are the sampling policy's (the first
    mini-batch): its own log-probs, detached, stand in (a ratio of exactly 1), and `fresh` returns them with
    their entropy: ({row: log-probs}, [entropy sum, tokens])."""
    new = [o is None for o in old]
    lp, mask, ent = response_logprobs(model, seqs, temperature, pad_id, entropy=any(new), share=share)
    old_lp = pad_rows([o or [] for o in old], lp.shape[1], lp.device)  # (b, R)
    fresh = ({}, [0.0, 0.0])
    if any(new):
        rows = torch.tensor(new, device=lp.device)[:, None]
        old_lp = torch.where(rows, lp.detach(), old_lp)
        fresh = ({b: lp[b, :len(s.token_ids)].tolist() for b, s in enumerate(seqs) if new[b]},
                 [(ent.detach() * mask * rows).sum().item(), (mask * rows).sum().item()])
    adv = torch.tensor([e.adv for e in seqs], device=lp.device)  # (b,)
    # the A = 0 tokens add exactly 0 to the loss: leaving them out of the mask changes only the metrics
    active = mask * (adv != 0).to(mask.dtype)[:, None]
    loss, metrics = policy_loss(lp, old_lp, adv, active, clip_low, clip_high, dual_clip, n_tokens)
    return loss, metrics, active.sum().item(), fresh


def clip_gradients(model, max_norm, accelerator):
    """The gradient norm over every parameter and rank, after clipping it to max_norm. FSDP2's parameters and
    gradients are shards (DTensors): torch's clip reduces their norms over the ranks."""
    from torch.distributed.tensor import DTensor

    params = list(model.parameters())
    if params and isinstance(params[0], DTensor):
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        return float(norm.full_tensor() if isinstance(norm, DTensor) else norm)
    return float(accelerator.clip_grad_norm_(params, max_norm))


def drop_unreached(model, accelerator, reached):
    """A mini-batch whose passes reached the vision tower on no rank leaves it without a gradient, as one
    process would (AdamW then skips it). FSDP reduces a gradient that only some ranks have as zeros on the
    others (so their collectives match): with no rank reaching it, those zeros are dropped here."""
    tower = [p for name, p in model.named_parameters() if "visual" in name and p.requires_grad]
    if tower and not reduce_sum(accelerator, [float(reached)])[0]:
        for p in tower:
            p.grad = None


def ppo_update(model, optimizer, accelerator, episodes, plan, old, temperature, micro_batch_size, pad_id,
               clip_low=0.2, clip_high=0.28, dual_clip=10.0, grad_clip=1.0, share=False):
    """Spec step 10: one optimizer step per mini-batch of the plan, token-level mean loss over the
    mini-batch's tokens (all ranks', A = 0 ones included). `old`: old_logprobs' {episode index: log-probs};
    a first mini-batch sequence it lacks takes its own (clipped_loss), added to `old`. Returns the metrics
    and this rank's [entropy sum, tokens] over those added.
    Metrics, the same with and without skip_zero_adv: train/loss and the clip fractions over every token of
    the step (A = 0 tokens add 0), approx_kl and ratio_mean over the tokens with A != 0 (those of A = 0 need a
    forward the skip saves, and the loss does not act on them). A mini-batch whose loss or gradient norm is
    not finite (NaN or inf) is not stepped on any rank: its gradient is dropped and counted in
    train/skipped_nonfinite, because one AdamW step would carry the NaN into every weight and into the
    optimizer's moments for good. `share`: responses to one prompt share its pass (logprobs.shared_batch);
    tokens/update counts the tokens the passes ran (fillers left out)."""
    per_token = ("clip_frac_low", "clip_frac_high", "clip_frac_dual", "loss")  # over every token
    per_active = ("approx_kl", "ratio_mean")  # over the A != 0 tokens
    world = accelerator.num_processes
    sums, n_active, grad_norms, skipped, entropy, ran = defaultdict(float), 0, [], 0, [0.0, 0.0], 0
    n_all = sum(len(e.token_ids) for e in episodes)  # the same on every rank
    for k, (members, work) in enumerate(zip(plan.minibatches, plan.rank_work)):
        n_tokens = sum(len(episodes[i].token_ids) for i in members)  # the divisor: every rank's tokens
        filler = coverage_filler(members, episodes, plan.computed)  # from the plan: the same on every rank
        micros = micro_batches(work, episodes, micro_batch_size, share)
        n_passes = passes(accelerator, len(micros)) + (filler is not None)
        finite, reached = True, False
        for j in range(n_passes):
            micro = micros[j] if j < len(micros) else (filler or members[:1])
            seqs = [episodes[i] for i in micro]
            reached = reached or any(e.vision is not None for e in seqs)
            if j >= len(micros):  # a zero-weight pass: a pass's collectives, an exact zero gradient
                lp, _, _ = response_logprobs(model, seqs, temperature, pad_id)
                accelerator.backward(lp.sum() * 0.0)
                continue
            # after the first optimizer step the weights have moved: only the first mini-batch may lack old
            mine = [old.get(i) if k == 0 else old[i] for i in micro]
            loss, metrics, tokens, (fresh, ent) = clipped_loss(model, seqs, mine, n_tokens, temperature,
                                                               pad_id, clip_low, clip_high, dual_clip, share)
            ran += pass_tokens(seqs, share)
            old.update({micro[b]: lps for b, lps in fresh.items()})
            entropy = [entropy[0] + ent[0], entropy[1] + ent[1]]
            # DDP / FSDP average the ranks' gradients; x world makes that the sum the global divisor expects
            accelerator.backward(loss * world)
            for key, v in metrics.items():
                sums[key] += v * tokens
            sums["loss"] += loss.item() * n_tokens
            finite = finite and math.isfinite(loss.item())
            n_active += tokens
        drop_unreached(model, accelerator, reached)
        grad_norm = clip_gradients(model, grad_clip, accelerator) if n_passes else 0.0
        grad_norms.append(grad_norm)
        # the gradient norm is the same on every rank after the reduction, the loss is this rank's own: all
        # ranks must agree to skip, or their weights would part
        nonfinite = float(not (finite and math.isfinite(grad_norm)))
        if (reduce_sum(accelerator, [nonfinite])[0] if world > 1 else nonfinite) > 0:
            skipped += 1
            what = "gradient norm" if finite else "loss"
            warnings.warn(f"mini-batch {k + 1}/{len(plan.minibatches)}: non-finite {what} (gradient norm "
                          f"{grad_norm}); optimizer step skipped, weights unchanged")
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    *totals, ran = reduce_sum(accelerator, [sums[key] for key in per_token + per_active] + [n_active, ran])
    out = {f"train/{key}": v / max(n_all, 1) for key, v in zip(per_token, totals)}
    active_totals = totals[len(per_token):-1]
    out.update({f"train/{key}": v / max(totals[-1], 1) for key, v in zip(per_active, active_totals)})
    out["train/grad_norm"] = sum(grad_norms) / max(len(grad_norms), 1)
    out["train/active_frac"] = sum(e.adv != 0 for e in episodes) / max(len(episodes), 1)
    out["train/skipped_nonfinite"] = skipped
    out["tokens/update"] = int(ran)
    return out, entropy


# ---------------------------------------------------------------------------------------------------------
# what a step logs (docs/ZPPO.md, "What to log per step")


def mean(xs):
    xs = list(xs)
    return sum(xs) / len(xs) if xs else 0.0


def step_metrics(plain, helped, episodes, n_new, buffer, buffered=True):
    """The per-step numbers the paper's analyses need, from the step's groups and episodes (the Hint / Prefix
    baselines add theirs: baselines.baseline_metrics)."""
    acc = [mean(g.rewards) for g in plain]
    rewards = lambda kind: [r for g in helped if g.kind == kind for r in g.rewards]
    lengths = lambda groups: [len(r.token_ids) for g in groups for r in g.rollouts]
    # the mechanism: all-wrong plain groups give GRPO no gradient; a BCQ/NCQ group of such a question with a
    # correct rollout has nonzero advantages (count/zero_solved), a signal plain sampling did not have
    zero = {g.question["id"] for g, a in zip(plain, acc) if a == 0}
    zero_groups = [g for g in helped if g.question["id"] in zero]
    metrics = {
        "acc/plain": mean(r for g in plain for r in g.rewards), "acc/plain_new": mean(acc[:n_new]),
        "acc/replay": mean(acc[n_new:]), "acc/bcq": mean(rewards("bcq")), "acc/ncq": mean(rewards("ncq")),
        "count/questions": len(plain), "count/replayed": len(plain) - n_new,
        "count/bcq": sum(g.kind == "bcq" for g in helped), "count/ncq": sum(g.kind == "ncq" for g in helped),
        "count/plain_zero": len(zero), "count/zero_reformulated": len(zero_groups),
        "count/zero_solved": sum(max(g.rewards) > 0 for g in zero_groups),
        "count/bcq_zero": sum(g.kind == "bcq" for g in zero_groups),
        "acc/bcq_zero": mean(r for g in zero_groups if g.kind == "bcq" for r in g.rewards),
        "adv/positive_frac": mean(e.adv > 0 for e in episodes),
        "groups/trivial_frac": mean(max(g.rewards) == min(g.rewards) for g in plain + helped if g.rewards),
        "buffer/size": len(buffer), "len/plain": mean(lengths(plain)),
        "len/reformulated": mean(lengths(helped)),
        "len/clipped_frac": mean(r.finish_reason == "length" for g in plain + helped for r in g.rollouts),
    }
    if buffered:
        metrics.update({f"buffer/graduated_total_from_{k}": v for k, v in buffer.graduated_by_bin.items()})
        metrics.update({f"buffer/admitted_total_at_{k}": v for k, v in buffer.admitted_by_bin.items()})
    return metrics
