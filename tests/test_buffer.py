"""Replay buffer: admission, graduation, FIFO eviction, sampling, state (spec step 11)."""
import random

import pytest

from buffer import ReplayBuffer


def q(i):
    return {"id": f"q{i}", "question": f"question {i}", "answer": str(i)}


def test_admits_below_tau_only_and_never_twice():
    buf = ReplayBuffer(10)
    moves = buf.update([(q(1), 0, 8), (q(2), 3, 8), (q(3), 4, 8), (q(4), 8, 8)], tau=0.5)
    assert buf.ids() == ["q1", "q2"]  # 3/8 < 0.5 is hard, 4/8 is not
    assert moves["admitted"] == 2 and moves["graduated"] == 0
    moves = buf.update([(q(1), 1, 8)], tau=0.5)  # still hard: stays, not re-admitted
    assert buf.ids() == ["q1", "q2"] and moves["admitted"] == 0
    assert buf.totals["admitted"] == 2


def test_graduation_and_per_bin_counts():
    buf = ReplayBuffer(10)
    buf.update([(q(1), 0, 8), (q(2), 1, 8), (q(3), 0, 8)], tau=0.5)
    moves = buf.update([(q(1), 5, 8), (q(2), 8, 8), (q(3), 3, 8)], tau=0.5)
    assert buf.ids() == ["q3"]
    assert moves["graduated"] == 2 and moves["graduated_from_0/8"] == 1 and moves["graduated_from_1/8"] == 1
    assert buf.admitted_by_bin == {"0/8": 2, "1/8": 1}
    assert buf.graduated_by_bin == {"0/8": 1, "1/8": 1}


def test_fifo_eviction_keeps_original_position_of_replayed_questions():
    buf = ReplayBuffer(3)
    buf.update([(q(1), 0, 8), (q(2), 0, 8), (q(3), 0, 8)], tau=0.5)
    # q1 is replayed and still hard: it keeps its (oldest) position and is the first evicted
    moves = buf.update([(q(1), 0, 8), (q(4), 0, 8), (q(5), 0, 8)], tau=0.5)
    assert buf.ids() == ["q3", "q4", "q5"]
    assert moves["evicted"] == 2 and len(buf) == 3


def test_graduation_happens_before_eviction():
    buf = ReplayBuffer(2)
    buf.update([(q(1), 0, 8), (q(2), 0, 8)], tau=0.5)
    moves = buf.update([(q(1), 8, 8), (q(3), 0, 8)], tau=0.5)
    assert buf.ids() == ["q2", "q3"] and moves["evicted"] == 0 and moves["graduated"] == 1


def test_zero_capacity_holds_nothing():
    buf = ReplayBuffer(0)
    moves = buf.update([(q(1), 0, 8)], tau=0.5)
    assert len(buf) == 0 and moves["admitted"] == 1 and moves["evicted"] == 1


def test_sampling_is_uniform_without_replacement():
    buf = ReplayBuffer(100)
    buf.update([(q(i), 0, 8) for i in range(10)], tau=0.5)
    rng = random.Random(0)
    for _ in range(50):
        ids = [ex["id"] for ex in buf.sample(4, rng)]
        assert len(ids) == len(set(ids)) == 4
    assert len(buf.sample(50, rng)) == 10  # fewer if the buffer holds fewer
    assert {ex["id"] for ex in buf.sample(10, rng, exclude={"q0", "q1"})} == {f"q{i}" for i in range(2, 10)}
    counts = {f"q{i}": 0 for i in range(10)}
    for _ in range(2000):
        for ex in buf.sample(2, rng):
            counts[ex["id"]] += 1
    assert all(330 < c < 470 for c in counts.values())  # 400 expected each


def test_state_round_trip():
    buf = ReplayBuffer(5)
    buf.update([(q(i), i % 3, 8) for i in range(7)], tau=0.5)
    buf.update([(q(3), 8, 8)], tau=0.5)
    other = ReplayBuffer(1)
    other.load_state_dict(buf.state_dict())
    assert other.ids() == buf.ids() and other.capacity == 5
    assert other.totals == buf.totals and other.graduated_by_bin == buf.graduated_by_bin
    assert other.admitted_by_bin == buf.admitted_by_bin
    rng1, rng2 = random.Random(3), random.Random(3)
    assert buf.sample(3, rng1) == other.sample(3, rng2)


def test_negative_capacity_is_rejected():
    with pytest.raises(ValueError):
        ReplayBuffer(-1)
