"""Advantages and loss against hand-computed values (spec steps 9 and 10)."""
import math

import pytest
import torch

from zppo import compute_advantages, policy_loss, token_entropy, token_logprobs

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
    loss, _, _ = one_token(20.0, -1.0, dual_clip=None)
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
