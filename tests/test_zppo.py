"""Advantages and loss against hand-computed values (spec steps 9 and 10)."""
import math

import pytest
import torch

from logprobs import token_entropy, token_logprobs
from zppo import compute_advantages, policy_loss

# group a: 1 of 4 right (non-trivial), group b: all right (trivial), group c: 1 of 2 right (non-trivial)
REWARDS = [1, 0, 0, 0, 1, 1, 0, 1]
GROUPS = ["a", "a", "a", "a", "b", "b", "c", "c"]
CENTRED = [0.75, -0.25, -0.25, -0.25, 0.0, 0.0, -0.5, 0.5]


def test_step1_is_group_mean_centring_without_std():
    adv = compute_advantages(REWARDS, GROUPS, norm="none")
    assert adv.tolist() == pytest.approx(CENTRED)


def test_without_zero_normalises_over_nontrivial_groups_only():
    adv = compute_advantages(REWARDS, GROUPS, norm="without_zero")
    # non-trivial rollouts: a (4) and c (2); their centred values have mean 0 and
    # population variance (0.5625 + 3 * 0.0625 + 0.25 + 0.25) / 6 = 1.25 / 6
    sigma = math.sqrt(1.25 / 6)
    expected = [x / (sigma + 1e-6) for x in CENTRED]
    expected[4] = expected[5] = 0.0
    assert adv.tolist() == pytest.approx(expected, rel=1e-6)
    assert adv[4] == 0 and adv[5] == 0


def test_with_zero_counts_trivial_groups_in_the_statistics():
    adv = compute_advantages(REWARDS, GROUPS, norm="with_zero")
    sigma = math.sqrt(1.25 / 8)  # same squares, now over all 8 rollouts
    assert adv.tolist() == pytest.approx([x / (sigma + 1e-6) for x in CENTRED], rel=1e-6)


def test_without_zero_with_an_uneven_mean():
    # groups of different sizes whose centred values are not symmetric: mu is still the mean of A'
    rewards, groups = [1, 0, 0, 1, 1, 0], [0, 0, 0, 1, 1, 1]
    centred = [2 / 3, -1 / 3, -1 / 3, 1 / 3, 1 / 3, -2 / 3]
    mu = sum(centred) / 6
    sigma = math.sqrt(sum((x - mu) ** 2 for x in centred) / 6)
    adv = compute_advantages(rewards, torch.tensor(groups))
    assert adv.tolist() == pytest.approx([(x - mu) / (sigma + 1e-6) for x in centred], rel=1e-6)


def test_all_trivial_gives_zero_and_empty_is_fine():
    assert compute_advantages([0, 0, 1, 1], [1, 1, 2, 2]).tolist() == [0, 0, 0, 0]
    assert compute_advantages([], []).numel() == 0
    with pytest.raises(ValueError):
        compute_advantages([1, 0], [0, 0], norm="bogus")


def one_token(ratio, adv, **kw):
    old = torch.zeros(1, 1)
    logp = torch.full((1, 1), math.log(ratio), requires_grad=True)
    loss, m = policy_loss(logp, old, torch.tensor([adv]), torch.ones(1, 1), **kw)
    loss.backward()
    return loss.item(), logp.grad.item(), m


def test_unclipped_region_and_gradient_sign():
    loss, grad, m = one_token(1.0, 1.0)
    assert loss == pytest.approx(-1.0) and grad == pytest.approx(-1.0)  # descent raises log p for A > 0
    loss, grad, m = one_token(1.1, -2.0)
    assert loss == pytest.approx(2.2) and grad == pytest.approx(2.2)  # descent lowers log p for A < 0
    assert m["clip_frac_low"] == m["clip_frac_high"] == m["clip_frac_dual"] == 0


def test_clip_high_binds_for_positive_advantage():
    loss, grad, m = one_token(2.0, 1.0)
    assert loss == pytest.approx(-1.28) and grad == 0 and m["clip_frac_high"] == 1
    loss, grad, m = one_token(1.25, 1.0)  # inside clip-higher's wider upper bound (1.28, not 1.2)
    assert loss == pytest.approx(-1.25) and grad != 0 and m["clip_frac_high"] == 0


def test_clip_low_binds_for_negative_advantage():
    loss, grad, m = one_token(0.5, -1.0)
    assert loss == pytest.approx(0.8) and grad == 0 and m["clip_frac_low"] == 1
    loss, grad, m = one_token(0.5, 1.0)  # a low ratio with A > 0 is not clipped
    assert loss == pytest.approx(-0.5) and grad == pytest.approx(-0.5) and m["clip_frac_low"] == 0


def test_dual_clip_bounds_negative_advantage_loss():
    loss, grad, m = one_token(20.0, -1.0)
    assert loss == pytest.approx(10.0) and grad == 0 and m["clip_frac_dual"] == 1
    loss, grad, m = one_token(5.0, -1.0)  # below the dual-clip ratio: ordinary PPO
    assert loss == pytest.approx(5.0) and grad == pytest.approx(5.0) and m["clip_frac_dual"] == 0
    loss, _, _ = one_token(20.0, -1.0, dual_clip=100.0)  # a ratio of 20 under a looser dual-clip: plain PPO
    assert loss == pytest.approx(20.0)


def test_token_level_mean_over_sequences_of_different_lengths():
    # sequence 1 has 3 tokens with A = +1, sequence 2 has 1 token with A = -1; ratio 1 everywhere
    logp = torch.zeros(2, 3)
    mask = torch.tensor([[1.0, 1, 1], [1, 0, 0]])
    loss, _ = policy_loss(logp, logp, torch.tensor([1.0, -1.0]), mask)
    assert loss.item() == pytest.approx((-3 + 1) / 4)  # a per-sequence mean would give 0
    loss, _ = policy_loss(logp, logp, torch.tensor([1.0, -1.0]), mask, num_tokens=8)
    assert loss.item() == pytest.approx(-2 / 8)


def test_approx_kl_is_zero_on_policy_and_positive_off_policy():
    logp = torch.tensor([[-1.0, -2.0]])
    _, m = policy_loss(logp, logp, torch.tensor([1.0]), torch.ones(1, 2))
    assert m["approx_kl"] == pytest.approx(0.0)
    _, m = policy_loss(logp + 0.3, logp, torch.tensor([1.0]), torch.ones(1, 2))
    assert m["approx_kl"] == pytest.approx(math.exp(0.3) - 1 - 0.3)


def test_token_logprobs_and_entropy():
    logits = torch.tensor([[[0.0, math.log(3.0)]]])
    assert token_logprobs(logits, torch.tensor([[1]])).item() == pytest.approx(math.log(0.75))
    assert token_logprobs(logits, torch.tensor([[1]]), temperature=2.0).item() == pytest.approx(
        math.log(math.sqrt(3) / (1 + math.sqrt(3))))
    assert token_entropy(logits).item() == pytest.approx(-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)))


# ---------------------------------------------------------------------------------------------------------
# --skip-zero-adv: the same update and the same metrics, only cheaper


class InOrder:
    """A plan_minibatches rng that keeps the order: mini-batch k is seqs[3k:3k + 3]."""

    def shuffle(self, order):
        pass


@pytest.mark.parametrize("kind", ["text", "vision"])
def test_skip_zero_adv_changes_nothing_but_the_compute(kind, tiny_model, tiny_vlm, images):
    """Three mini-batches: A != 0 and A = 0 mixed, then all A = 0, then (vision) A != 0 only on text rows.
    Without a gradient AdamW skips a parameter (no step count, no moments' decay, no weight decay), so the
    skip must still give the left-out parameters their exact zero gradient; and the logged numbers (entropy,
    sync gap, loss, clip fractions, approx-KL) must not depend on which sequences were computed. Micro-batches
    of 1 (no padding): bit for bit."""
    import copy

    from accelerate import Accelerator

    from models import load_model
    from reformulate import with_closer
    from rollout import encode_prompt
    from zppo import Episode, mean_entropy, old_logprobs, plan_minibatches, ppo_update, sync_check

    model0, tok = load_model(tiny_vlm if kind == "vision" else tiny_model)
    advs = [1.2, -0.7, 0.0, 0.0, 0.0, 0.0, 0.0, 0.9, -1.1]
    with_image = ([True, False, True, True, False, False, True, False, False] if kind == "vision"
                  else [False] * 9)
    seqs = []
    for i, (a, img) in enumerate(zip(advs, with_image)):
        question = with_closer(f"What is {i} + 3?")
        ids, vision = encode_prompt(tok, {"text": question, "images": [images[i % 3]]} if img else question)
        answer = tok(f"It is \\boxed{{{i + 3}}}" + " so" * (i % 4), add_special_tokens=False)["input_ids"]
        seqs.append(Episode(ids, answer, group=f"q{i}/plain", adv=a, vision=vision,
                            engine_logprobs=[-0.5 - 0.01 * t for t in range(len(answer))]))

    def run(skip, all_logprobs=True):
        model, batch = copy.deepcopy(model0), copy.deepcopy(seqs)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.999), eps=1e-8,
                                      weight_decay=0.1)
        accelerator = Accelerator(cpu=True)
        plan = plan_minibatches(batch, 3, InOrder(), skip_zero_adv=skip, all_logprobs=all_logprobs)
        old, entropy, _ = old_logprobs(model, batch, plan, 1.0, 1, tok.pad_token_id, accelerator)
        before = set(old)
        update, first = ppo_update(model, optimizer, accelerator, batch, plan, old, 1.0, 1, tok.pad_token_id)
        assert (first == [0.0, 0.0]) == all_logprobs  # all: every old log-prob came from the pass before
        metrics = {"policy/entropy": mean_entropy(accelerator, entropy, first),
                   "sync/logprob_abs_diff": sync_check(batch, old, 1e9, 1, accelerator)}
        return model, optimizer, plan, {**metrics, **update, "computed before": before, "old": old}

    model_a, opt_a, plan_a, skipped = run(True)
    model_b, opt_b, plan_b, full = run(False)
    state_a, state_b = opt_a.state_dict()["state"], opt_b.state_dict()["state"]
    assert state_a.keys() == state_b.keys() and len(state_b) == len(list(model0.parameters()))
    for key in state_b:
        # every mini-batch a step
        assert float(state_a[key]["step"]) == float(state_b[key]["step"]) == 3.0, key
        assert torch.equal(state_a[key]["exp_avg"], state_b[key]["exp_avg"]), key
        assert torch.equal(state_a[key]["exp_avg_sq"], state_b[key]["exp_avg_sq"]), key
    moved = dict(model0.named_parameters())
    for name, p in model_b.named_parameters():
        assert torch.equal(dict(model_a.named_parameters())[name], p), name
        assert not torch.equal(moved[name], p), name  # weight decay reached every parameter
    # the same metrics but the compute: tokens/update counts the passes run (prompts included)
    lengths = [len(e.prompt_ids) + len(e.token_ids) for e in seqs]
    assert skipped.pop("tokens/update") == sum(n for n, a in zip(lengths, advs) if a != 0)
    assert full.pop("tokens/update") == sum(lengths)
    assert skipped == full and skipped["train/approx_kl"] > 0 and skipped["train/loss"] != 0
    assert plan_a.computed == [a != 0 for a in advs] and all(plan_b.computed)

    # --old-logprobs needed: no pass before the update for the first mini-batch (its own forward's
    # log-probs serve) nor for the skipped A = 0 rows; the same update, the metrics over the computed rows
    model_c, _, plan_c, needed = run(True, all_logprobs=False)
    assert needed["computed before"] == {7, 8} == set(plan_c.rank_logprobs)  # mini-batch 3's computed rows
    assert set(needed["old"]) == {0, 1, 7, 8}  # and mini-batch 1's own, added by the update
    for i in (0, 1, 7, 8):
        assert needed["old"][i] == pytest.approx(full["old"][i], abs=1e-5)
    for name, p in model_c.named_parameters():
        assert torch.allclose(dict(model_b.named_parameters())[name], p, atol=1e-6), name
    for key in ("train/loss", "train/approx_kl", "train/clip_frac_low", "train/clip_frac_high"):
        assert needed[key] == pytest.approx(full[key], abs=1e-6), key
    assert needed["policy/entropy"] != full["policy/entropy"] and needed["policy/entropy"] > 0


# ---------------------------------------------------------------------------------------------------------
# --share-prompts: a prompt's rollouts share its pass (logprobs.shared_batch); the same update, fewer tokens


def test_shared_prompts_keep_a_prompt_s_rollouts_on_one_rank_and_give_the_same_update(tiny_dense):
    import copy
    import random

    from accelerate import Accelerator

    from models import load_model
    from zppo import Episode, old_logprobs, plan_minibatches, ppo_update

    # 4 prompts (two of one length) x 4 rollouts, every advantage nonzero
    rng = random.Random(0)
    prompts = [[5, 6, 7, 8], [9, 10, 11, 12], [13, 14], [15, 16, 17, 18, 19, 20]]
    seqs = [Episode(p, [rng.randrange(3, 300) for _ in range(rng.randint(1, 6))], adv=rng.choice([-1.0, 0.5]))
            for p in prompts for _ in range(4)]
    rng.shuffle(seqs)
    for share in (False, True):
        works = [plan_minibatches(seqs, 1, InOrder(), rank, 2, share=share).rank_work[0] for rank in (0, 1)]
        assert sorted(works[0] + works[1]) == list(range(16)) and not set(works[0]) & set(works[1])
        ranks_of = {tuple(p): {r for r in (0, 1) for i in works[r] if seqs[i].prompt_ids == p}
                    for p in prompts}
        # shared: every prompt's 4 rollouts on one rank (8 a rank); one rollout per rank in turn otherwise
        assert all(len(r) == (1 if share else 2) for r in ranks_of.values()), ranks_of

    model0, tok = load_model(tiny_dense)

    def run(share):
        model = copy.deepcopy(model0)
        optimizer = torch.optim.SGD(model.parameters(), lr=1.0)  # the step is the gradient (AdamW: its sign)
        accelerator = Accelerator(cpu=True)
        plan = plan_minibatches(seqs, 2, random.Random(1), share=share, all_logprobs=False)
        old, _, forward = old_logprobs(model, seqs, plan, 1.0, 8, tok.pad_token_id, accelerator, share)
        metrics, _ = ppo_update(model, optimizer, accelerator, seqs, plan, old, 1.0, 8, tok.pad_token_id,
                                share=share)
        return model, metrics, forward, plan

    shared, m_shared, f_shared, plan = run(True)
    alone, m_alone, f_alone, _ = run(False)
    for name, p in alone.named_parameters():
        assert torch.allclose(dict(shared.named_parameters())[name], p, atol=1e-5), name
    assert m_shared["train/loss"] == pytest.approx(m_alone["train/loss"], abs=1e-6)
    # tokens run: every prompt once per micro-batch instead of once per rollout
    lengths = sum(len(e.prompt_ids) + len(e.token_ids) for e in seqs)
    second = sum(len(seqs[i].prompt_ids) + len(seqs[i].token_ids) for i in plan.minibatches[1])
    assert m_alone["tokens/update"] == lengths and f_alone == second  # needed: mini-batch 2's old log-probs
    assert m_shared["tokens/update"] < 0.8 * lengths and f_shared < 0.8 * second
    assert any(not torch.equal(p, q) for p, q in zip(alone.parameters(), model0.parameters()))
