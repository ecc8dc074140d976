"""ZPPO's optimisation: group advantages (REINFORCE++ two-step), the clipped policy loss, the update.

Pure torch, no I/O, so every formula can be checked by hand in tests/test_zppo.py.
Spec (ZPPO.md), steps 9 and 10. The step batch is a list of `Episode`s; train.py fills in the
rollout fields, this file the rest.
"""
import math
import warnings
from collections import defaultdict
from dataclasses import dataclass, field

import torch


@dataclass
class Episode:
    """One student rollout of the step batch, with everything the update needs."""
    prompt_ids: list  # chat-templated prompt tokens (plain, BCQ or NCQ prompt)
    token_ids: list  # the sampled response tokens; the only tokens that enter the gradient
    reward: float = 0.0  # binary reward against the original question's gold answer
    group: str = ""  # advantage group, "<question id>/<kind>": plain, BCQ and NCQ are separate groups (step 8)
    kind: str = "plain"  # "plain", "bcq" or "ncq"
    engine_logprobs: list = field(default_factory=list)  # the engine's log-probs at sampling time (sync check)
    adv: float = 0.0  # step 9: one scalar, broadcast to every token
    minibatch: int = 0  # step 10: which of the I mini-batches this episode is in
    on_this_rank: bool = True  # whether this process computes its forward/backward (plan_minibatches)
    computed: bool = True  # whether any process does (False: A = 0 under skip_zero_adv)
    old_logprobs: list = field(default_factory=list)  # the sampling policy's log-probs, recomputed by the trainer
    vision: dict = None  # the prompt's image inputs (pixel_values, image_grid_thw); None for a text prompt

ADV_NORMS = ("without_zero", "with_zero", "none")


def compute_advantages(rewards, group_ids, norm="without_zero", eps=1e-6):
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
        return (centred - mu) / (sigma + eps)
    if not nontrivial.any():
        return torch.zeros_like(rewards)
    sel = centred[nontrivial]
    mu, sigma = sel.mean(), sel.std(correction=0)
    return torch.where(nontrivial, (centred - mu) / (sigma + eps), torch.zeros_like(centred))


def policy_loss(logprobs, old_logprobs, advantages, mask, clip_low=0.2, clip_high=0.28, dual_clip=10.0,
                num_tokens=None):
    """PPO clipped surrogate with clip-higher and dual-clip, averaged over tokens.

    logprobs, old_logprobs, mask: (B, T); advantages: (B,) broadcast to every token, or (B, T).
    Token-level aggregation: the sum over all unmasked tokens divided by their count, so a long
    response weighs in proportion to its length (not one vote per sequence). `num_tokens` overrides
    the divisor when one mini-batch is split into micro-batches for memory.
    Clip-higher (1 + 0.28 above, 1 - 0.2 below) leaves room for unlikely tokens to grow; dual-clip
    bounds the loss of a negative-advantage token whose ratio has exploded to dual_clip * |A|.
    """
    mask = mask.to(logprobs.dtype)
    adv = advantages if advantages.dim() == 2 else advantages.unsqueeze(-1)
    adv = adv.to(logprobs.dtype).expand_as(logprobs)
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    surr1 = ratio * adv
    surr2 = torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high) * adv
    token_loss = -torch.min(surr1, surr2)
    negative = adv < 0
    if dual_clip is not None:
        token_loss = torch.where(negative, torch.minimum(token_loss, -dual_clip * adv), token_loss)
    denom = mask.sum() if num_tokens is None else torch.as_tensor(num_tokens, dtype=mask.dtype)
    denom = denom.clamp(min=1.0)
    loss = (token_loss * mask).sum() / denom

    with torch.no_grad():
        n = mask.sum().clamp(min=1.0)
        frac = lambda cond: ((cond.to(mask.dtype) * mask).sum() / n).item()  # noqa: E731
        metrics = {
            # the clip is active (gradient zero) only on the side where it binds for that sign of A
            "clip_frac_low": frac(negative & (ratio < 1.0 - clip_low)),
            "clip_frac_high": frac((adv > 0) & (ratio > 1.0 + clip_high)),
            "clip_frac_dual": frac(negative & (ratio > dual_clip)) if dual_clip is not None else 0.0,
            # k3 estimator of KL(old || new) on the sampled tokens: (r - 1) - log r >= 0
            "approx_kl": (((ratio - 1.0) - log_ratio) * mask).sum().item() / n.item(),
            "ratio_mean": ((ratio * mask).sum() / n).item(),
        }
    return loss, metrics


def token_logprobs(logits, tokens, temperature=1.0):
    """Log-probability of each token under softmax(logits / temperature): the sampling distribution."""
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32)) / temperature
    return torch.gather(torch.log_softmax(logits, dim=-1), -1, tokens.unsqueeze(-1)).squeeze(-1)


def token_entropy(logits, temperature=1.0):
    """Entropy of softmax(logits / temperature) at each position."""
    logp = torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)) / temperature, dim=-1)
    return -(logp.exp() * logp).sum(-1)


LOGITS_CHUNK_BYTES = 256 * 2 ** 20  # fp32 logits of one chunk of tokens: 270 tokens at Qwen3.5's 248,320 words


def _compute_dtype(hidden, weight):
    """The dtype the output head would run in here: autocast's when it is on (bf16 on GPU), else the weight's."""
    device = hidden.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else weight.dtype


def _softmax_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


class ChunkedHead(torch.autograd.Function):
    """Log-prob of each target token and the entropy of softmax(h W^T / T), from hidden states h (N, H) and
    the output head's weight W (V, H), without ever holding (N, V) logits: chunks of tokens go through
    the head one at a time, and backward recomputes each chunk's logits (the technique of verl's
    FusedLinearForPPO and Liger's fused linear losses). Returns (N, 2) fp32: [log-prob, entropy].

    Gradients, for z = h W^T / T, p = softmax(z), E = sum_v p_v z_v:
      d logp_t / dz = onehot(t) - p          d entropy / dz = -p * (z - E)
    then dh = dz W / T and dW = dz^T h / T, accumulated over chunks in fp32."""

    @staticmethod
    def _logits(h, weight, temperature, dtype, suppress=None):
        with torch.autocast(h.device.type, enabled=False):  # softmax in fp32 (fp64 for fp64 weights)
            z = (h.to(dtype) @ weight.to(dtype).T).to(_softmax_dtype(dtype)).div_(temperature)  # (n, V)
        if suppress is not None:  # tokens the sampler never emits: probability 0 (finite, so 0 * z stays 0)
            z[:, suppress] = torch.finfo(z.dtype).min
        return z

    @staticmethod
    def forward(ctx, hidden, weight, targets, temperature, chunk, suppress=None):
        dtype = _compute_dtype(hidden, weight)
        out = torch.empty(hidden.shape[0], 2, dtype=_softmax_dtype(dtype), device=hidden.device)
        for i in range(0, hidden.shape[0], chunk):
            z = ChunkedHead._logits(hidden[i:i + chunk], weight, temperature, dtype, suppress)
            lse = torch.logsumexp(z, dim=-1)
            out[i:i + chunk, 0] = z.gather(-1, targets[i:i + chunk, None]).squeeze(-1) - lse
            p = (z - lse[:, None]).exp_()
            out[i:i + chunk, 1] = lse - (p[:, None, :] @ z[:, :, None]).view(-1)  # H = lse - E_p[z]
        ctx.save_for_backward(hidden, weight, targets)
        ctx.temperature, ctx.chunk, ctx.dtype, ctx.suppress = temperature, chunk, dtype, suppress
        return out

    @staticmethod
    def backward(ctx, grad_out):
        hidden, weight, targets = ctx.saved_tensors
        T, chunk, dtype = ctx.temperature, ctx.chunk, ctx.dtype
        grad_h = torch.empty_like(hidden)
        grad_w = torch.zeros(weight.shape, dtype=_softmax_dtype(dtype), device=weight.device)
        for i in range(0, hidden.shape[0], chunk):
            h, g_lp, g_ent = hidden[i:i + chunk], grad_out[i:i + chunk, 0], grad_out[i:i + chunk, 1]
            z = ChunkedHead._logits(h, weight, T, dtype, ctx.suppress)
            p = (z - torch.logsumexp(z, dim=-1, keepdim=True)).exp_()
            if g_ent.any():  # entropy enters no loss in ZPPO, but the gradient is exact when it does
                z -= (p[:, None, :] @ z[:, :, None]).view(-1, 1)  # z - E_p[z], in place
                dz = z.mul_(p).mul_(-g_ent[:, None])
                dz -= p * g_lp[:, None]
            else:
                dz = p.mul_(-g_lp[:, None])
            dz.scatter_add_(-1, targets[i:i + chunk, None], g_lp[:, None])
            dz = dz.div_(T).to(dtype)
            with torch.autocast(h.device.type, enabled=False):
                grad_h[i:i + chunk] = (dz @ weight.to(dtype)).to(hidden.dtype)
                grad_w += dz.T @ h.to(dtype)
        return grad_h, grad_w.to(weight.dtype), None, None, None, None


def suppressed_token_ids(config):
    """A vision-language model's image/video placeholder tokens. The policy is the model's distribution
    without them: the engines never sample one (in a response it would be read as an image slot) and the
    trainer's log-probs exclude them the same way, so the two stay one distribution."""
    keys = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
    return sorted({getattr(config, k) for k in keys if getattr(config, k, None) is not None}) \
        if getattr(config, "vision_config", None) is not None else []


def unwrap(model):
    """The model inside DDP / FSDP / compile wrappers (FSDP's nested units stay in place)."""
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or model._orig_mod
    return model


def padded_batch(model, seqs, pad_id):
    """The teacher-forced batch of `seqs` (Episodes): the model's inputs and the response mask (B, R).

    Prompts are left-padded and responses right-padded, so every response starts in the same column P
    and only the last R + 1 positions need the output head (`logits_to_keep`)."""
    device = next(model.parameters()).device
    P = max(len(s.prompt_ids) for s in seqs)
    R = max(len(s.token_ids) for s in seqs)
    ids = torch.full((len(seqs), P + R), pad_id, dtype=torch.long)  # (B, P+R)
    attn = torch.zeros_like(ids)  # (B, P+R)
    mask = torch.zeros(len(seqs), R)  # (B, R)
    for b, s in enumerate(seqs):
        p, r = s.prompt_ids, s.token_ids
        ids[b, P - len(p):P + len(r)] = torch.tensor(p + r)
        attn[b, P - len(p):P + len(r)] = 1
        mask[b, :len(r)] = 1
    ids, attn, mask = ids.to(device), attn.to(device), mask.to(device)
    inputs = dict(input_ids=ids, attention_mask=attn, position_ids=(attn.cumsum(-1) - 1).clamp(min=0),
                  logits_to_keep=R + 1)
    visions = [s.vision for s in seqs if s.vision is not None]
    if visions:  # rows with and without images mix; the model derives multimodal positions from the image tokens
        inputs.update({k: torch.cat([v[k] for v in visions]).to(device) for k in visions[0]}, position_ids=None,
                      mm_token_type_ids=(ids == unwrap(model).config.image_token_id).int())
    return inputs, mask


def with_head(model, head_forward, **inputs):
    """model(**inputs).logits with the output head's forward replaced by head_forward for this call: it gets
    the last hidden states (B, R+1, H) and returns what stands in for the logits. It runs inside the model's
    own forward, so wrappers that gather parameters for it (FSDP) or cast it (autocast) see an ordinary call."""
    head = unwrap(model).get_output_embeddings()
    head.forward = head_forward
    try:
        return model(**inputs, use_cache=False).logits  # no KV cache: one teacher-forced pass
    finally:
        del head.forward  # the class's forward again


def response_logprobs(model, seqs, temperature, pad_id, entropy=False, chunk_tokens=None):
    """Teacher-forced log-probs of each response token of `seqs` (Episodes): logprobs (B, R), mask (B, R),
    entropy (B, R) or None.

    The head never builds the (B, R, V) logits: for the length of this call its forward is ChunkedHead,
    which returns (B, R, 2) [log-prob, entropy] in place of logits (padded_batch, with_head)."""
    inputs, mask = padded_batch(model, seqs, pad_id)
    B, R = mask.shape
    targets = inputs["input_ids"][:, -R:]  # (B, R)
    head = unwrap(model).get_output_embeddings()
    chunk = chunk_tokens or max(1, LOGITS_CHUNK_BYTES // (4 * head.weight.shape[0]))
    suppress = suppressed_token_ids(unwrap(model).config) or None

    def head_forward(hidden):  # hidden (B, R+1, H): position P-1+k predicts response token k
        h = hidden[:, :-1].reshape(-1, hidden.shape[-1])
        return ChunkedHead.apply(h, head.weight, targets.reshape(-1), temperature, chunk, suppress).view(B, R, 2)

    out = with_head(model, head_forward, **inputs)
    return out[..., 0], mask, out[..., 1] if entropy else None


def pad_rows(rows, width, device):
    out = torch.zeros(len(rows), width, device=device)
    for b, r in enumerate(rows):
        out[b, :len(r)] = torch.tensor(r[:width], device=device)
    return out


def micro_batches(seqs, size):
    """Chunks of similar length (sorted), so little compute goes to padding."""
    seqs = sorted(seqs, key=lambda s: (len(s.prompt_ids), len(s.token_ids)))
    return [seqs[i:i + size] for i in range(0, len(seqs), size)]


def plan_minibatches(seqs, iters, rng, rank=0, world=1, skip_zero_adv=True):
    """Spec step 10's split: the whole step batch shuffled into I equal mini-batches. Sets each episode's
    `minibatch`, `computed` (whether its forward/backward runs in the update) and `on_this_rank` (whether this
    rank runs it): every rank takes every world-th sequence that enters the gradient. A sequence with A = 0 adds
    exactly zero loss and zero gradient, so with skip_zero_adv it is not computed at all; its tokens still count
    in the token-level mean, so the gradient is identical, only cheaper (early on most groups are trivial), and
    ppo_update keeps the optimizer's step, the metrics and fill_old_logprobs's entropy as without it. Returns I."""
    order = list(range(len(seqs)))
    rng.shuffle(order)
    I = min(iters, len(order))
    for k in range(I):
        mb = [seqs[i] for i in order[k * len(order) // I:(k + 1) * len(order) // I]]
        for s in mb:
            s.minibatch, s.on_this_rank, s.computed = k, False, not skip_zero_adv or s.adv != 0
        for s in [s for s in mb if s.computed][rank::world]:
            s.on_this_rank = True
    return I


def reduce_sum(accelerator, values):
    """Sum a list of floats over all ranks."""
    t = torch.tensor(values, dtype=torch.float64, device=accelerator.device)
    return (accelerator.reduce(t, "sum") if accelerator.num_processes > 1 else t).tolist()


def logprob_share(seqs, rank, world):
    """The episodes whose sampling-policy log-probs this rank computes: those it computes in the update, and its
    world-th share of those no rank does (A = 0 under skip_zero_adv), so the policy's entropy and the sync check
    cover every rollout whether or not the update skips some."""
    rest = {id(s) for s in [s for s in seqs if not s.computed][rank::world]}
    return [s for s in seqs if s.on_this_rank or id(s) in rest]  # in step order: sums do not depend on the skip


@torch.no_grad()
def fill_old_logprobs(model, seqs, temperature, micro_batch_size, pad_id, accelerator):
    """Set `old_logprobs` (the sampling policy's: the weights before this step's updates) on this rank's
    episodes (logprob_share); returns the policy's mean token entropy over every rollout of the step, all
    ranks together (None if there are no tokens)."""
    model.eval()
    ent_sum, n_tok = 0.0, 0.0
    share = logprob_share(seqs, accelerator.process_index, accelerator.num_processes)
    for micro in micro_batches(share, micro_batch_size):
        lp, mask, ent = response_logprobs(model, micro, temperature, pad_id, entropy=True)  # (b, R) each
        for b, s in enumerate(micro):
            s.old_logprobs = lp[b, :len(s.token_ids)].tolist()
        ent_sum += (ent * mask).sum().item()
        n_tok += mask.sum().item()
    model.train()
    ent_sum, n_tok = reduce_sum(accelerator, [ent_sum, n_tok])
    return ent_sum / n_tok if n_tok else None


def sync_check(seqs, threshold, step, accelerator):
    """Mean |engine log-prob - trainer log-prob| over the tokens of this step's rollouts (each rank its
    logprob_share). Both are the sampling policy's, so the gap is numerical noise unless the engine samples
    from stale or wrong weights: a silent weight-sync failure shows up here first."""
    share = logprob_share(seqs, accelerator.process_index, accelerator.num_processes)
    diffs = [abs(a - b) for s in share if len(s.engine_logprobs) == len(s.token_ids)
             for a, b in zip(s.engine_logprobs, s.old_logprobs)]
    total, count = reduce_sum(accelerator, [sum(diffs), len(diffs)])
    gap = total / count if count else None
    if gap is not None and gap > threshold:
        warnings.warn(f"step {step}: engine and trainer log-probs differ by {gap:.3f} per token (> {threshold}); "
                      "is the engine sampling from the current weights?")
    return gap


def coverage_filler(mb):
    """The zero-weight micro-batch a mini-batch needs when skip_zero_adv left out every sequence that would have
    reached some parameters: all of them (every A = 0), or all its image ones (the vision tower). Without the skip
    those parameters get an exact zero gradient and AdamW steps them (step count, moments, weight decay); with no
    gradient at all it would leave them behind. None when nothing is missing."""
    computed = [s for s in mb if s.computed]
    images = [s for s in mb if s.vision is not None]
    if mb and not computed:
        return (images or mb)[:1]
    if images and not any(s.vision is not None for s in computed):
        return images[:1]
    return None


def ppo_update(model, optimizer, accelerator, seqs, iters, temperature, micro_batch_size, pad_id,
               clip_low=0.2, clip_high=0.28, dual_clip=10.0, grad_clip=1.0):
    """Spec step 10: one optimizer step per mini-batch of plan_minibatches, token-level mean loss.

    Over several processes each rank computes its share; the loss is divided by the mini-batch's global
    token count and multiplied by the number of ranks, because DDP/FSDP average gradients: the result is
    the gradient of the global token-level mean. Every rank runs the same number of micro-batches (a
    zero-weight one fills in) so the collective operations inside backward stay in step; a zero-weight one
    also stands in for the sequences skip_zero_adv leaves out when they alone would reach some parameters
    (coverage_filler), so the optimizer steps exactly as without the skip.
    Metrics, the same with and without skip_zero_adv: train/loss and the clip fractions over every token of
    the step (A = 0 tokens add 0), approx_kl and ratio_mean over the tokens with A != 0 (those of A = 0 need a
    forward the skip saves, and the loss does not act on them).
    A mini-batch whose loss or gradient norm is not finite (NaN or inf) is not stepped on any rank: its
    gradient is dropped and counted in train/skipped_nonfinite, because one AdamW step would carry the NaN
    into every weight and into the optimizer's moments for good."""
    world = accelerator.num_processes
    per_token = ("clip_frac_low", "clip_frac_high", "clip_frac_dual", "loss")  # over every token
    per_active = ("approx_kl", "ratio_mean")  # over the A != 0 tokens
    sums, n_active, grad_norms, skipped = defaultdict(float), 0, [], 0
    n_all = sum(len(s.token_ids) for s in seqs if s.minibatch < iters)  # the same on every rank
    for k in range(iters):
        mb = [s for s in seqs if s.minibatch == k]
        n_tokens = sum(len(s.token_ids) for s in mb)
        micros = micro_batches([s for s in mb if s.on_this_rank], micro_batch_size)
        n_micro = len(micros)
        if world > 1:
            n_micro = int(accelerator.gather(torch.tensor([n_micro], device=accelerator.device)).max())
        filler = coverage_filler(mb)  # from the plan, which every rank shares: the same everywhere
        n_micro += filler is not None
        finite_loss = True
        for j in range(n_micro):
            micro = micros[j] if j < len(micros) else (filler or mb[:1])
            lp, mask, _ = response_logprobs(model, micro, temperature, pad_id)  # (b, R) each
            if j >= len(micros):
                accelerator.backward(lp.sum() * 0.0)  # a filler: zero gradient, same collectives
                continue
            old = pad_rows([s.old_logprobs for s in micro], lp.shape[1], lp.device)  # (b, R)
            adv = torch.tensor([s.adv for s in micro], device=lp.device)  # (b,)
            # the A = 0 tokens add exactly 0 to the loss: leaving them out of the mask changes only the metrics
            active = mask * (adv != 0).to(mask.dtype)[:, None]
            loss, m = policy_loss(lp, old, adv, active, clip_low, clip_high, dual_clip, num_tokens=n_tokens)
            accelerator.backward(loss * world)
            tok = active.sum().item()
            for key, v in m.items():
                sums[key] += v * tok
            sums["loss"] += loss.item() * n_tokens
            finite_loss = finite_loss and math.isfinite(loss.item())
            n_active += tok
        grad_norm = float(accelerator.clip_grad_norm_(model.parameters(), grad_clip)) if n_micro else 0.0
        grad_norms.append(grad_norm)
        # the gradient norm is the same on every rank after the all-reduce, the loss is this rank's own: all
        # ranks must agree to skip, or their weights would part
        nonfinite = float(not (finite_loss and math.isfinite(grad_norm)))
        if (reduce_sum(accelerator, [nonfinite])[0] if world > 1 else nonfinite) > 0:
            skipped += 1
            what = "gradient norm" if finite_loss else "loss"
            warnings.warn(f"mini-batch {k + 1}/{iters}: non-finite {what} (gradient norm {grad_norm}); optimizer "
                          "step skipped, weights unchanged")
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    totals = reduce_sum(accelerator, [sums[key] for key in per_token + per_active] + [n_active])
    out = {f"train/{key}": v / max(n_all, 1) for key, v in zip(per_token, totals)}
    out.update({f"train/{key}": v / max(totals[-1], 1) for key, v in zip(per_active, totals[len(per_token):])})
    out["train/grad_norm"] = sum(grad_norms) / max(len(grad_norms), 1)
    out["train/active_frac"] = sum(s.adv != 0 for s in seqs) / max(len(seqs), 1)
    out["train/skipped_nonfinite"] = skipped
    return out
