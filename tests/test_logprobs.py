"""The chunked output head (logprobs.ChunkedHead) against the full-logits reference, and its memory bound."""
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from conftest import ROOT
from logprobs import response_logprobs, token_entropy, token_logprobs
from models import load_model
from zppo import Episode


def reference(model, seqs, temperature, pad_id):
    """The plain computation: full (B, R, V) logits from the model, then log-softmax."""
    P, R = max(len(s.prompt_ids) for s in seqs), max(len(s.token_ids) for s in seqs)
    ids = torch.full((len(seqs), P + R), pad_id)
    attn = torch.zeros_like(ids)
    for b, s in enumerate(seqs):
        ids[b, P - len(s.prompt_ids):P + len(s.token_ids)] = torch.tensor(s.prompt_ids + s.token_ids)
        attn[b, P - len(s.prompt_ids):P + len(s.token_ids)] = 1
    logits = model(input_ids=ids, attention_mask=attn, position_ids=(attn.cumsum(-1) - 1).clamp(min=0),
                   logits_to_keep=R + 1).logits[:, :-1]
    return token_logprobs(logits, ids[:, P:], temperature), token_entropy(logits, temperature)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_chunked_logprobs_entropy_and_gradients_equal_the_full_logits(tiny_model, temperature):
    model, tok = load_model(tiny_model, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    V = model.config.vocab_size
    seqs = [Episode(torch.randint(0, V, (n,), generator=g).tolist(),
                    torch.randint(0, V, (m,), generator=g).tolist())
            for n, m in ((5, 7), (3, 2), (6, 5))]
    # an arbitrary loss over both outputs
    weights = torch.rand(len(seqs), 7, generator=g, dtype=torch.float64)

    def grads(lp, ent, mask):
        model.zero_grad()
        ((lp * weights * mask).sum() + 0.3 * (ent * weights * mask).sum()).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    lp, mask, ent = response_logprobs(model, seqs, temperature, tok.pad_token_id, entropy=True,
                                      chunk_tokens=4)
    got = grads(lp, ent, mask)
    ref_lp, ref_ent = reference(model, seqs, temperature, tok.pad_token_id)
    want = grads(ref_lp, ref_ent, mask)
    m = mask.bool()
    assert torch.allclose(lp[m], ref_lp[m], atol=1e-10) and torch.allclose(ent[m], ref_ent[m], atol=1e-10)
    assert got.keys() == want.keys() and "model.embed_tokens.weight" in got  # tied head: one tensor
    for name in want:
        assert torch.allclose(got[name], want[name], atol=1e-9, rtol=1e-7), name
    assert "forward" not in vars(model.lm_head)  # the head is itself again after the call


def test_logprobs_under_bf16_autocast_track_the_reference(tiny_model):
    model, tok = load_model(tiny_model)
    seqs = [Episode([5, 6, 7], [8, 9, 10, 11]), Episode([5], [12, 13])]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        lp, mask, _ = response_logprobs(model, seqs, 1.0, tok.pad_token_id, chunk_tokens=3)
        ref, _ = reference(model, seqs, 1.0, tok.pad_token_id)
    assert lp.dtype == torch.float32 and torch.allclose(lp[mask.bool()], ref[mask.bool()], atol=1e-5)


LARGE_VOCAB = textwrap.dedent("""
    import resource, sys, time, torch
    sys.path.insert(0, {root!r})
    from transformers import Qwen3_5ForCausalLM, Qwen3_5TextConfig
    from logprobs import response_logprobs
    from zppo import Episode
    config = Qwen3_5TextConfig(vocab_size=152_064, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        layer_types=["linear_attention", "full_attention"], num_attention_heads=2, num_key_value_heads=1,
        head_dim=32, linear_num_key_heads=2, linear_num_value_heads=2, linear_key_head_dim=16,
        linear_value_head_dim=16, max_position_embeddings=16384, tie_word_embeddings=True, pad_token_id=0)
    torch.manual_seed(0)
    model = Qwen3_5ForCausalLM(config).train()
    (getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable)(
        {{"use_reentrant": False}})
    seq = Episode(torch.randint(0, 152_064, (64,)).tolist(), torch.randint(0, 152_064, (8192,)).tolist())
    start = time.time()
    lp, mask, _ = response_logprobs(model, [seq], 1.0, 0{chunk})
    (lp * mask).sum().backward()
    assert torch.isfinite(model.model.embed_tokens.weight.grad).all()
    print("peak_rss_gib", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, "seconds", time.time() - start)
""")  # noqa: E501 (the script run in the subprocess, verbatim)


def test_large_vocabulary_long_response_fits_in_two_gib():
    """A 152k-word vocabulary and an 8,192-token response: full fp32 logits alone would be 5 GB."""
    script = LARGE_VOCAB.format(root=ROOT, chunk="")
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "OMP_NUM_THREADS": "2"}, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    peak = float(res.stdout.split()[1])
    print(f"\n[large vocabulary] {res.stdout.strip()}")
    assert peak < 2.0


def test_responses_sharing_their_prompt_s_pass_give_the_padded_batch_s_logprobs_and_gradients(tiny_dense):
    """shared_batch: one row per distinct prompt, its responses behind a mask. The same log-probs, entropies
    and gradients as one padded row per response (fp64), for fewer tokens (logprobs.pass_tokens)."""
    from logprobs import pass_tokens, shares_prompts

    model, tok = load_model(tiny_dense, dtype=torch.float64)
    assert shares_prompts(model)
    g = torch.Generator().manual_seed(1)
    V = model.config.vocab_size

    def ids(n):
        return torch.randint(3, V, (n,), generator=g).tolist()

    a, b, c = ids(6), ids(3), ids(6)  # a and c: two prompts of one length
    # prompt a answered three times (one of them a single token), b once, c twice; interleaved
    seqs = [Episode(a, ids(4)), Episode(c, ids(2)), Episode(b, ids(5)), Episode(a, ids(1)),
            Episode(c, ids(7)), Episode(a, ids(6))]
    weights = torch.rand(len(seqs), 7, generator=g, dtype=torch.float64)

    def run(share):
        model.zero_grad()
        lp, mask, ent = response_logprobs(model, seqs, 0.7, tok.pad_token_id, entropy=True, chunk_tokens=5,
                                          share=share)
        ((lp * weights * mask).sum() + 0.3 * (ent * weights * mask).sum()).backward()
        return lp.detach(), mask, ent.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    lp, mask, ent, grads = run(True)
    ref_lp, ref_mask, ref_ent, ref_grads = run(False)
    m = mask.bool()
    assert torch.equal(mask, ref_mask) and mask.shape == (6, 7)
    assert torch.allclose(lp[m], ref_lp[m], atol=1e-10) and torch.allclose(ent[m], ref_ent[m], atol=1e-10)
    # gradients to fp32 rounding: the model's RMSNorm runs in fp32 even here, and a shared prompt position's
    # gradient (the sum over its responses) rounds there once instead of once per response
    for name in ref_grads:
        assert torch.allclose(grads[name], ref_grads[name], atol=1e-6, rtol=1e-5), name
        assert not torch.equal(grads[name], torch.zeros_like(grads[name])), name
    # three prompts once, the responses' 25 tokens: 43 tokens instead of 6 + 6 + 3 + 6 + 6 + 6 + 25 = 58
    assert pass_tokens(seqs, True) == 6 + 3 + 6 + 25 and pass_tokens(seqs, False) == 58


def test_only_full_attention_text_models_through_sdpa_share_a_prompt_s_pass(tiny_model, tiny_dense, tiny_vlm,
                                                                            images):
    """Linear-attention layers read a row in order, and a flash kernel takes no custom mask: those models
    (and any row with images) keep one row per response, whatever `share` says."""
    from engines.transformers_engine import TransformersEngine
    from logprobs import shares_prompts

    assert not shares_prompts(load_model(tiny_model)[0])  # Qwen3.5: Gated DeltaNet layers
    vlm, tok = load_model(tiny_vlm, pixels=(1024, 4096))
    assert not shares_prompts(vlm)
    dense = load_model(tiny_dense)[0]
    assert shares_prompts(dense)
    dense.config.use_sliding_window, dense.config.sliding_window = True, 16  # the mask has no window
    assert not shares_prompts(dense)
    dense.config.use_sliding_window = False
    dense.set_attn_implementation("eager")
    assert not shares_prompts(dense)
    # rows with an image fall back to the padded batch: bit for bit the same
    engine = TransformersEngine(vlm, tok)
    prompts = [{"text": "What is 1 + 2?", "images": images[:2]}, "Hi"]
    rollouts = engine.generate(prompts, n=2, max_new_tokens=4, temperature=1.0)
    seqs = [Episode(r.prompt_ids, r.token_ids, vision=r.vision) for g in rollouts for r in g]
    with torch.no_grad():
        shared = response_logprobs(vlm, seqs, 1.0, tok.pad_token_id, share=True)[0]
        padded = response_logprobs(vlm, seqs, 1.0, tok.pad_token_id)[0]
    assert torch.equal(shared, padded)
