"""device.py's throughput numbers, by hand: model FLOPs, the parameters a token multiplies by, the GPU peak
table, the per-phase meter (seconds and peak memory, nested phases), perf_metrics; then every train.py step
logs them, consistent with what the step did (its rollouts' lengths, its phases' seconds)."""
import json
import os
import time
from types import SimpleNamespace

import pytest
import torch

import device
import train
from device import (
    GIB,
    Meter,
    cpu_peak,
    device_peak,
    flop_parameters,
    gpu_peak,
    model_flops,
    perf_metrics,
    release_memory,
    resident_bytes,
)
from test_train import ARGS, read_metrics


def test_model_flops_count_two_per_parameter_and_token_forward_six_with_the_backward():
    assert model_flops(100, 0, 0) == 0
    assert model_flops(100, 7, 0) == 2 * 100 * 7
    assert model_flops(100, 0, 5) == 6 * 100 * 5
    assert model_flops(10, 3, 4) == 60 + 240


def test_the_gpu_table_takes_the_most_specific_name_and_knows_no_cpu():
    assert gpu_peak("NVIDIA H100 80GB HBM3") == 989e12
    assert gpu_peak("NVIDIA H100 PCIe") == 756e12  # not the SXM part's number
    assert gpu_peak("NVIDIA H200") == 989e12
    assert gpu_peak("NVIDIA A100-SXM4-80GB") == 312e12
    assert gpu_peak("NVIDIA L40S") == 362e12 and gpu_peak("NVIDIA L4") == 121e12
    assert gpu_peak("Some Accelerator 9000") is None


def test_a_cpu_peak_is_measured_once_without_touching_the_run_s_random_state():
    torch.manual_seed(3)
    before = torch.get_rng_state()
    peak, source = device_peak("cpu", torch.float32)
    assert torch.equal(torch.get_rng_state(), before)  # a resumed run samples as the straight one did
    assert 1e8 < peak < 1e14 and "CPU" in source and "float32" in source
    assert cpu_peak(torch.float32, torch.get_num_threads()) == peak  # measured once per setting


def test_the_cpu_probe_keeps_its_fastest_window(monkeypatch):
    # a clock where the first of the 5 windows runs 10x slower (the OS took the cores meanwhile): the peak is
    # the undisturbed windows' rate, not the average that one disturbed window drags down
    class Clock:
        now, ticks = 0.0, 0

        def perf_counter(self):
            self.ticks += 1
            self.now += 0.01 if self.ticks <= 6 else 0.001
            return self.now

    monkeypatch.setattr(device, "time", Clock())
    peak = cpu_peak.__wrapped__(torch.float32, 1, seconds=0.05, size=64)
    per_call = 2 * 64 ** 3
    # undisturbed: a matmul per 0.001 s tick (less the window's own clock readings); one window of it all
    # would read under a tenth of that
    assert 0.7 * per_call / 0.001 < peak <= per_call / 0.001


def test_flop_parameters_leave_out_an_input_embedding_that_is_not_the_head():
    def model(tied):
        m = torch.nn.Module()
        m.embed, m.body = torch.nn.Embedding(50, 8), torch.nn.Linear(8, 8)  # 400, 72
        m.head = torch.nn.Linear(8, 50, bias=False)  # 400
        if tied:
            m.head.weight = m.embed.weight
        m.get_input_embeddings, m.get_output_embeddings = (lambda: m.embed), (lambda: m.head)
        return m

    assert flop_parameters(model(tied=False)) == 72 + 400  # the lookup multiplies nothing
    assert flop_parameters(model(tied=True)) == 400 + 72  # one matrix: the head's multiply counts


def test_the_meter_times_phases_and_an_inner_phase_s_peak_counts_for_the_outer_one():
    meter = Meter("cpu", interval=0.005)
    with meter.phase("outer"):
        with meter.phase("inner"):
            big = torch.ones(64 * 2 ** 20 // 4)  # 64 MiB, touched
            time.sleep(0.05)
            del big
        time.sleep(0.02)
    with meter.phase("inner"):  # seconds add up over a step
        time.sleep(0.03)
    meter.close()
    assert meter.seconds["outer"] >= 0.07 and meter.seconds["inner"] >= 0.08
    assert meter.peaks["outer"] >= meter.peaks["inner"] > 0
    assert meter.peaks["inner"] > 60 * 2 ** 20  # the tensor was resident inside it
    meter.step()
    assert meter.seconds == {} and meter.peaks == {}


def test_perf_metrics_by_hand():
    meter = SimpleNamespace(seconds={"rollout": 2.0, "update": 4.0, "sync": 0.5}, peaks={"update": 3 * GIB})
    tokens = {"rollout": 100, "prefill": 20, "forward": 300, "update": 200}
    out = perf_metrics(meter, 10.0, tokens, parameters=1000, peak=1e6, world=2)
    assert out["time/rollout"] == 2.0 and out["time/sync"] == 0.5 and out["time/step"] == 10.0
    assert out["mem/update_gib"] == 3.0
    assert out["perf/rollout_tokens_per_s"] == 50.0 and out["perf/update_tokens_per_s"] == 50.0
    flops = 2 * 1000 * (100 + 20 + 300) + 6 * 1000 * 200
    assert out["perf/mfu"] == pytest.approx(flops / (10.0 * 1e6 * 2))
    assert out["perf/update_mfu"] == pytest.approx((2 * 1000 * 300 + 6 * 1000 * 200) / (4.0 * 1e6 * 2))
    assert "perf/mfu" not in perf_metrics(meter, 10.0, tokens, 1000, None, 1)  # no peak: no utilisation


def test_every_step_logs_its_throughput_consistent_with_what_it_did(tiny_model, tmp_path):
    out = str(tmp_path / "run")
    train.main(train.parse_config(["--student", tiny_model, *ARGS, "--steps", "2", "--dump-rollouts",
                                   "--out-dir", out]))
    with open(os.path.join(out, "rollouts.jsonl")) as f:
        dumped = [json.loads(line) for line in f]
    for m in read_metrics(out):
        sampled = sum(r["tokens"] for r in dumped if r["step"] == m["step"])
        assert m["tokens/rollout"] == sampled > 0  # every rollout of steps 1 and 7, once
        assert m["perf/rollout_tokens_per_s"] == pytest.approx(sampled / m["time/rollout"])
        assert m["tokens/update"] <= m["tokens/forward"]  # the A = 0 sequences skip the backward
        assert m["perf/update_tokens_per_s"] == pytest.approx(m["tokens/update"] / m["time/update"])
        assert 0 < m["perf/mfu"] < 1 and 0 < m["perf/update_mfu"] < 1
        phases = [k for k in m if k.startswith("time/") and k != "time/step"]
        assert {"time/rollout", "time/score", "time/update", "time/sync"} <= set(phases)
        assert sum(m[k] for k in phases) <= m["time/step"] * 1.01  # phases do not overlap here
        assert m["mem/update_gib"] > 0.1 and m["mem/rollout_gib"] > 0.1  # this process's resident memory


def test_freed_heap_memory_is_handed_back_to_the_os():
    """glibc keeps freed blocks resident below its heap's top; release_memory (called by train.py after
    every update) hands them back. 200 MB of 64 KiB blocks, all but the topmost freed."""
    blocks = [bytearray(64 * 1024) for _ in range(3200)]
    del blocks[:-1]  # the last block pins the heap's top: free() alone cannot shrink it
    before = resident_bytes()
    release_memory()
    assert before - resident_bytes() > 100 * 2 ** 20
