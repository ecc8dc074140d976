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
