"""Teacher-forced log-probs of response tokens, without ever holding (tokens x vocabulary) logits.

The update (zppo.py), the distillation baselines (baselines.py) and the engines (models.py) share this file:
the padded batch of prompts + responses, the output-head kernels that work chunk by chunk, and the tokens
the policy never samples. A vocabulary of 248,320 words makes full logits of a 12,288-token response 12 GB
in fp32; the kernels keep one chunk of 256 MB at a time and recompute it in backward (the technique of
verl's FusedLinearForPPO and Liger's fused linear losses).
"""
import math

import torch

LOGITS_CHUNK_BYTES = 256 * 2 ** 20  # fp32 logits of one chunk: 270 tokens at Qwen3.5's 248,320 words


def token_logprobs(logits, tokens, temperature=1.0):
    """Log-probability of each token under softmax(logits / temperature): the sampling distribution."""
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32)) / temperature
    return torch.gather(torch.log_softmax(logits, dim=-1), -1, tokens.unsqueeze(-1)).squeeze(-1)


def token_entropy(logits, temperature=1.0):
    """Entropy of softmax(logits / temperature) at each position."""
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    logp = torch.log_softmax(logits / temperature, dim=-1)
    return -(logp.exp() * logp).sum(-1)


def _compute_dtype(hidden, weight):
    """The dtype the output head would run in here: autocast's when it is on (bf16 on GPU), else the
    weight's."""
    device = hidden.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else weight.dtype


def _softmax_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def _logits(h, weight, temperature, dtype, suppress=None):
    """One chunk's logits z = h W^T / T, in fp32 (fp64 for fp64 weights) whatever autocast says."""
    with torch.autocast(h.device.type, enabled=False):
        z = (h.to(dtype) @ weight.to(dtype).T).to(_softmax_dtype(dtype)).div_(temperature)  # (n, V)
    if suppress is not None:  # tokens the sampler never emits: probability 0 (finite, so 0 * z stays 0)
        z[:, suppress] = torch.finfo(z.dtype).min
    return z


def _head_backward(hidden, weight, chunk, dtype, dz_of):
    """The chunked heads' shared backward: dh = dz W and dW = dz^T h, accumulated chunk by chunk in fp32,
    where dz_of(i, h) recomputes chunk i's gradient with respect to its logits (divided by T, in `dtype`)."""
    grad_h = torch.empty_like(hidden)
    grad_w = torch.zeros(weight.shape, dtype=_softmax_dtype(dtype), device=weight.device)
    for i in range(0, hidden.shape[0], chunk):
        h = hidden[i:i + chunk]
        dz = dz_of(i, h)
        with torch.autocast(h.device.type, enabled=False):
            grad_h[i:i + chunk] = (dz @ weight.to(dtype)).to(hidden.dtype)
            grad_w += dz.T @ h.to(dtype)
    return grad_h, grad_w.to(weight.dtype)


class ChunkedHead(torch.autograd.Function):
    """Log-prob of each target token and the entropy of softmax(h W^T / T), from hidden states h (N, H) and
    the output head's weight W (V, H), one chunk of tokens at a time. Returns (N, 2) fp32: [log-prob,
    entropy].

    Gradients, for z = h W^T / T, p = softmax(z), E = sum_v p_v z_v:
      d logp_t / dz = onehot(t) - p          d entropy / dz = -p * (z - E)
    then dh = dz W / T and dW = dz^T h / T (_head_backward)."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, temperature, chunk, suppress=None):
        dtype = _compute_dtype(hidden, weight)
        out = torch.empty(hidden.shape[0], 2, dtype=_softmax_dtype(dtype), device=hidden.device)
        for i in range(0, hidden.shape[0], chunk):
            z = _logits(hidden[i:i + chunk], weight, temperature, dtype, suppress)
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

        def dz_of(i, h):
            g_lp, g_ent = grad_out[i:i + chunk, 0], grad_out[i:i + chunk, 1]
            z = _logits(h, weight, T, dtype, ctx.suppress)
            p = (z - torch.logsumexp(z, dim=-1, keepdim=True)).exp_()
            if g_ent.any():  # entropy enters no loss in ZPPO, but the gradient is exact when it does
                z -= (p[:, None, :] @ z[:, :, None]).view(-1, 1)  # z - E_p[z], in place
                dz = z.mul_(p).mul_(-g_ent[:, None])
                dz -= p * g_lp[:, None]
            else:
                dz = p.mul_(-g_lp[:, None])
            dz.scatter_add_(-1, targets[i:i + chunk, None], g_lp[:, None])
            return dz.div_(T).to(dtype)

        return (*_head_backward(hidden, weight, chunk, dtype, dz_of), None, None, None, None)


def generalized_jsd(student_logp, teacher_logp, beta=0.5):
    """Per-position generalized JSD of GKD (Agarwal et al., 2024) from log-probs (..., V) -> (...):
        M = beta T + (1 - beta) S,   JSD = beta KL(T || M) + (1 - beta) KL(S || M)
    0 for identical distributions, symmetric in S and T at beta 0.5, at most the binary entropy of beta.
    The paper does not give beta; 0.5 is our default (--jsd-beta)."""
    log_m = torch.logsumexp(torch.stack([teacher_logp + math.log(beta), student_logp + math.log(1 - beta)]),
                            dim=0)
    kl_t = (teacher_logp.exp() * (teacher_logp - log_m)).sum(-1)
    kl_s = (student_logp.exp() * (student_logp - log_m)).sum(-1)
    return beta * kl_t + (1 - beta) * kl_s


class ChunkedJSD(torch.autograd.Function):
    """generalized_jsd between softmax(h W^T / T) (the student: hidden states h (N, H), head W (V, H)) and
    softmax(h_t W_t^T / T) (the frozen teacher), per position, one chunk at a time as ChunkedHead does.
    Returns (N,) in fp32 (fp64 for fp64 weights).

    Gradient, for the student's z = h W^T / T, s = softmax(z) and m = beta t + (1 - beta) s:
        dJSD / ds = (1 - beta) (log s - log m)      (the other terms sum to a constant, which softmax removes)
        dJSD / dz = s * (g - <s, g>)  with g = (1 - beta) (log s - log m)
    then dh = dz W / T and dW = dz^T h / T; the teacher gets none."""

    @staticmethod
    def _logps(h, weight, th, tweight, temperature, dtype):
        student = torch.log_softmax(_logits(h, weight, temperature, dtype), dim=-1)
        tdtype = torch.promote_types(th.dtype, tweight.dtype)
        teacher = torch.log_softmax(_logits(th, tweight, temperature, tdtype), dim=-1)
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

        def dz_of(i, h):
            s, t = ChunkedJSD._logps(h, weight, teacher_hidden[i:i + chunk], teacher_weight, T, dtype)
            log_m = torch.logsumexp(torch.stack([t + math.log(beta), s + math.log(1 - beta)]), dim=0)
            g = (s - log_m).mul_(1 - beta)
            p = s.exp_()
            dz = g.sub_((p * g).sum(-1, keepdim=True)).mul_(p)
            return dz.mul_(grad_out[i:i + chunk, None] / T).to(dtype)

        return (*_head_backward(hidden, weight, chunk, dtype, dz_of), None, None, None, None, None)


def suppressed_token_ids(config):
    """A vision-language model's image/video placeholder tokens. The policy is the model's distribution
    without them: the engines never sample one (in a response it would be read as an image slot) and the
    trainer's log-probs exclude them the same way, so the two stay one distribution."""
    if getattr(config, "vision_config", None) is None:
        return []
    keys = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
    return sorted({getattr(config, k) for k in keys if getattr(config, k, None) is not None})


def unwrap(model):
    """The model inside DDP / FSDP / compile wrappers (FSDP's nested units stay in place)."""
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or model._orig_mod
    return model


def batch_vision(visions):
    """Image inputs of a batch's rows (None for rows without images), concatenated in row order."""
    visions = [v for v in visions if v is not None]
    keys = dict.fromkeys(k for v in visions for k in v)  # rows with images, videos or both
    return {k: torch.cat([v[k] for v in visions if k in v]) for k in keys}


def mm_token_types(ids, config):
    """Qwen's mm_token_type_ids: 1 at image tokens, 2 at video tokens; the model places its multimodal rotary
    positions from them."""
    return (ids == config.image_token_id).int() + 2 * (ids == getattr(config, "video_token_id", -1)).int()


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
    vision = batch_vision([s.vision for s in seqs])
    if vision:  # rows with and without images mix; the model places multimodal positions from image tokens
        inputs.update({k: v.to(device) for k, v in vision.items()}, position_ids=None,
                      mm_token_type_ids=mm_token_types(ids, unwrap(model).config))
    return inputs, mask


def shares_prompts(model):
    """Whether responses to one prompt can share its pass (shared_batch): only where a custom attention mask
    is all that separates them, i.e. a text model whose every layer is full softmax attention through SDPA,
    without a sliding window. Not so: linear-attention layers (Qwen3.5's Gated DeltaNet reads the whole row
    in order), flash-attention kernels (no custom masks), multimodal positions (M-RoPE)."""
    config = unwrap(model).config
    layers = getattr(config, "layer_types", None) or ["full_attention"]
    window = getattr(config, "sliding_window", None) if getattr(config, "use_sliding_window", True) else None
    return (getattr(config, "_attn_implementation", None) == "sdpa" and set(layers) == {"full_attention"}
            and window is None and not any(hasattr(config, k) for k in ("text_config", "vision_config")))


def shared(seqs, share):
    """Whether a pass over `seqs` shares prompts (shared_batch): asked for, and no row with images."""
    return share and all(getattr(s, "vision", None) is None for s in seqs)


def pass_tokens(seqs, share):
    """How many tokens a teacher-forced pass over `seqs` runs, padding left out: each prompt once per pass
    with `share` (shared_batch, for rows without images), once per response otherwise."""
    if shared(seqs, share):
        return sum(len(p) for p in {tuple(s.prompt_ids) for s in seqs}) + sum(len(s.token_ids) for s in seqs)
    return sum(len(s.prompt_ids) + len(s.token_ids) for s in seqs)


def shared_batch(model, seqs, pad_id):
    """The teacher-forced batch of `seqs` (Episodes, without images) with one row per distinct prompt: the
    prompt once, then each of its responses, every response attending to the prompt and to itself only (a
    4-D mask) at the positions it would have alone. The same log-probs as padded_batch's (up to rounding)
    for fewer tokens: a prompt of P tokens answered k times costs P + k R instead of k (P + R).
    Returns the inputs, the response mask (B, R), and where (B, R): each response token's predicting position
    in the flattened (rows x T) hidden states."""
    device = next(model.parameters()).device
    rows = {}  # prompt -> the indices of its responses in seqs
    for b, s in enumerate(seqs):
        rows.setdefault(tuple(s.prompt_ids), []).append(b)
    T = max(len(p) + sum(len(seqs[b].token_ids) for b in members) for p, members in rows.items())
    R = max(len(s.token_ids) for s in seqs)
    ids = torch.full((len(rows), T), pad_id, dtype=torch.long)
    positions = torch.zeros_like(ids)
    segment = torch.full_like(ids, -2)  # -1: the prompt, b: response b, -2: padding
    where = torch.zeros(len(seqs), R, dtype=torch.long)
    mask = torch.zeros(len(seqs), R)
    for row, (prompt, members) in enumerate(rows.items()):
        P = len(prompt)
        ids[row, :P], positions[row, :P], segment[row, :P] = torch.tensor(prompt), torch.arange(P), -1
        at = P
        for b in members:
            r = seqs[b].token_ids
            ids[row, at:at + len(r)] = torch.tensor(r)
            positions[row, at:at + len(r)] = torch.arange(P, P + len(r))
            segment[row, at:at + len(r)] = b
            # token 0 is predicted by the prompt's last position, token k by the response's position k - 1
            where[b, :len(r)] = row * T + torch.tensor([P - 1] + list(range(at, at + len(r) - 1)))
            mask[b, :len(r)] = 1
            at += len(r)
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    # (rows, 1, T, T): causal, and the key is the prompt or the query's own response (padding sees itself)
    attend = causal & ((segment[:, :, None] == segment[:, None, :]) | (segment[:, None, :] == -1))
    inputs = dict(input_ids=ids.to(device), attention_mask=attend[:, None].to(device),
                  position_ids=positions.to(device), logits_to_keep=0)
    return inputs, mask.to(device), where.to(device)


def with_head(model, head_forward, **inputs):
    """model(**inputs).logits with the output head's forward replaced by head_forward for this call: it gets
    the last hidden states (B, R+1, H) and returns what stands in for the logits. It runs inside the model's
    own forward, so wrappers that gather parameters for it (FSDP) or cast it (autocast) see an ordinary
    call."""
    head = unwrap(model).get_output_embeddings()
    head.forward = head_forward
    try:
        return model(**inputs, use_cache=False).logits  # no KV cache: one teacher-forced pass
    finally:
        del head.forward  # the class's forward again


def response_logprobs(model, seqs, temperature, pad_id, entropy=False, chunk_tokens=None, share=False):
    """Teacher-forced log-probs of each response token of `seqs` (Episodes): logprobs (B, R), mask (B, R),
    entropy (B, R) or None. The head's forward is ChunkedHead for the length of this call: it returns
    (B, R, 2) [log-prob, entropy] in place of logits. `share`: responses to one prompt share its pass
    (shared_batch; for models where shares_prompts, and rows without images)."""
    share = shared(seqs, share)
    if share:
        inputs, mask, where = shared_batch(model, seqs, pad_id)
        B, R = mask.shape
        targets = torch.tensor([list(s.token_ids) + [0] * (R - len(s.token_ids)) for s in seqs],
                               device=mask.device)
    else:
        inputs, mask = padded_batch(model, seqs, pad_id)
        B, R = mask.shape
        targets = inputs["input_ids"][:, -R:]  # (B, R)
    head = unwrap(model).get_output_embeddings()
    chunk = chunk_tokens or max(1, LOGITS_CHUNK_BYTES // (4 * head.weight.shape[0]))
    suppress = suppressed_token_ids(unwrap(model).config) or None

    def head_forward(hidden):  # hidden (B, R+1, H): position P-1+k predicts response token k
        if share:  # hidden (rows, T, H): each response token's predicting position
            h = hidden.reshape(-1, hidden.shape[-1])[where.reshape(-1)]
        else:
            h = hidden[:, :-1].reshape(-1, hidden.shape[-1])
        out = ChunkedHead.apply(h, head.weight, targets.reshape(-1), temperature, chunk, suppress)
        return out.view(B, R, 2)

    out = with_head(model, head_forward, **inputs)
    return out[..., 0], mask, out[..., 1] if entropy else None


def response_jsd(model, teacher_model, seqs, temperature, pad_id, beta=0.5, chunk_tokens=None):
    """Per-token generalized JSD between the student's (`model`, with gradient) and the frozen teacher's
    next-token distributions at every response token of `seqs`: (B, R) and the response mask (B, R). Both
    read the same token ids (a shared vocabulary, checked at start). The teacher's forward keeps only its
    last hidden states (B, R, H_t), without gradient; the student's head then runs ChunkedJSD on both."""
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
        out = ChunkedJSD.apply(h, head.weight, th, teacher_weight, temperature, beta, chunk)
        return out.view(len(seqs), R)

    return with_head(model, head_forward, **inputs), mask
