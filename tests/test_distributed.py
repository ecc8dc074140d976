"""Real multi-process training on CPU ranks (gloo), the way `accelerate launch` and torchrun run the paper's
command on GPUs: DDP and FSDP2 (torch's fully_shard, which zppo applies itself on CPU and GPU alike), text and
vision-language students, text and mixed image/text data, uneven shares, and two nodes of one process on
loopback with a resume across them. Each run is a real launch of real processes; nothing is stood in for."""
import json
import os
import socket
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from conftest import ROOT
from device import MEASURED
from test_images import PIXELS, write_data
from test_train import ARGS, read_metrics
from zppo import compute_advantages

ENV = {**os.environ, "OMP_NUM_THREADS": "1",
       "PYTHONPATH": os.pathsep.join([ROOT, os.path.join(ROOT, "tests")])}
ENV.pop("ACCELERATE_USE_FSDP", None)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(script, args, nproc=2, env=None, timeout=600):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()), script, *args]
    return subprocess.run(cmd, cwd=ROOT, env={**ENV, **(env or {})}, capture_output=True, text=True,
                          timeout=timeout, check=False)


def accelerate_fsdp(args, nproc=2, env=None, timeout=600):
    """The headline command's FSDP form as typed on GPUs (accelerate launch, configs/fsdp.yaml)."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", "configs/fsdp.yaml",
           "--num_processes", str(nproc), "--mixed_precision", "no", "--main_process_port", str(free_port()),
           os.path.join("tests", "parity_train.py"), *args]
    return subprocess.run(cmd, cwd=ROOT, env={**ENV, **(env or {})}, capture_output=True, text=True,
                          timeout=timeout, check=False)


def passes_of(folder):
    """Every rank's count of trainer passes (tests/parity_train.py writes them)."""
    counts = []
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name)) as f:
            counts.append(json.load(f)["passes"])
    return counts


def test_two_processes_train_in_step_with_global_statistics(tiny_model, tmp_path):
    out = str(tmp_path / "two")
    res = torchrun(os.path.join("tests", "parity_train.py"),
                   ["--student", tiny_model, *ARGS, "--steps", "2", "--save-every", "1", "--keep-checkpoints",
                    "5", "--out-dir", out, "--dump-rollouts"], env={"ACCELERATE_USE_CPU": "true"})
    assert res.returncode == 0, res.stderr[-3000:]

    metrics = read_metrics(out)  # one log, written once: one line per step
    assert [m["step"] for m in metrics] == [1, 2]
    assert all(m["dist/weight_checksum_spread"] == 0.0 for m in metrics)  # both ranks hold the same weights
    assert sorted(os.listdir(os.path.join(out, "checkpoints"))) == ["step_000001", "step_000002"]

    with open(os.path.join(out, "rollouts.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    for m in metrics:
        step = [r for r in rows if r["step"] == m["step"]]
        # the whole step batch (both ranks' prompts), not one rank's shard
        assert len(step) == 4 * (m["count/questions"] + m["count/bcq"] + m["count/ncq"])
        recomputed = compute_advantages([r["reward"] for r in step], [r["group"] for r in step])
        assert torch.allclose(recomputed, torch.tensor([r["adv"] for r in step]), atol=1e-6)
        assert 0 < m["adv/positive_frac"] < 1


def update(model, out, *flags, nproc=1):
    """tests/dist_update.py in one process or several; returns what it wrote."""
    path = str(out)
    if nproc == 1:
        res = subprocess.run([sys.executable, os.path.join("tests", "dist_update.py"), model, path, *flags],
                             cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600, check=False)
    else:
        res = torchrun(os.path.join("tests", "dist_update.py"), [model, path, *flags], nproc=nproc)
    assert res.returncode == 0, res.stderr[-3000:]
    with open(path) as f:
        return json.load(f)


def assert_same_update(got, want, rel):
    """The same step: metrics to float noise, every weight's sum and sum of squares within `rel`, and AdamW
    stepped every parameter as often (a spurious step on zero gradients moves weights by lr x decay: a
    difference of the same size as the noise, caught by the count)."""
    for key, value in want["metrics"].items():
        assert got["metrics"][key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    for name, sums in want["weights"].items():
        assert got["weights"][name] == pytest.approx(sums, rel=rel, abs=1e-4), name
    assert got["steps"] == want["steps"]
    assert len(set(got["passes"])) == 1  # every rank ran as many passes: their collectives matched


@pytest.mark.parametrize("student", ["text", "vision"])
def test_one_update_is_the_same_on_one_process_under_ddp_and_under_fsdp(student, tiny_model, tiny_vlm,
                                                                       images, tmp_path):
    """Spec step 10 on one fixed step batch: one process, FSDP on one rank, DDP on two, FSDP on two. The
    vision-language student gets mixed data, two image episodes in 22, so a mini-batch holds none: the
    vision tower takes fewer AdamW steps than the text model, in every layout (before the fix FSDP stepped it
    on zero gradients); the ranks' shares are uneven (11 and 11 episodes in unequal micro-batches, A = 0 ones
    skipped)."""
    model = tiny_model if student == "text" else tiny_vlm
    flags = ["--skip-zero-adv"]
    if student == "vision":
        flags += ["--images", *images[:2], "--image-every", "12"]
    single = update(model, tmp_path / "single.json", *flags)
    assert_same_update(update(model, tmp_path / "fsdp1.json", "--fsdp", *flags), single, rel=5e-4)
    if student == "vision":
        steps = single["steps"]
        assert {v for n, v in steps.items() if "visual" in n} == {2}
        assert {v for n, v in steps.items() if "visual" not in n} == {3}
    assert_same_update(update(model, tmp_path / "ddp2.json", *flags, nproc=2), single, rel=5e-4)
    assert_same_update(update(model, tmp_path / "fsdp2.json", "--fsdp", *flags, nproc=2), single, rel=5e-4)


def test_an_update_without_the_unneeded_log_prob_pass_is_the_same_on_two_ranks(tiny_model, tmp_path):
    """--old-logprobs needed: the first mini-batch's old log-probs come from its own forward, on every rank
    its own share; the same weights as with the full pass, and the same metrics on one process, DDP and
    FSDP over two ranks (the entropy and sync gap then over the computed sequences)."""
    full = update(tiny_model, tmp_path / "all.json", "--skip-zero-adv")
    flags = ["--skip-zero-adv", "--old-logprobs", "needed"]
    single = update(tiny_model, tmp_path / "needed.json", *flags)
    for name, sums in full["weights"].items():
        assert single["weights"][name] == pytest.approx(sums, rel=1e-5, abs=1e-6), name
    assert single["steps"] == full["steps"]
    assert single["metrics"]["train/loss"] == pytest.approx(full["metrics"]["train/loss"], rel=1e-5)
    assert single["metrics"]["policy/entropy"] != full["metrics"]["policy/entropy"]
    assert_same_update(update(tiny_model, tmp_path / "ddp2.json", *flags, nproc=2), single, rel=5e-4)
    assert_same_update(update(tiny_model, tmp_path / "fsdp2.json", "--fsdp", *flags, nproc=2), single,
                       rel=5e-4)


def test_prompt_sharing_gives_the_same_update_on_one_process_under_ddp_and_under_fsdp(tiny_dense, tmp_path):
    """--share-prompts on a dense text student (every layer full attention through SDPA): a group's
    rollouts answer one prompt and share its pass. On two ranks each rank takes a contiguous run in prompt
    order (zppo.plan_minibatches); the weights, loss and clip fractions are those of one process without
    sharing, under DDP and FSDP. The tokens run differ with the micro-batches each layout forms, and are
    fewer than without sharing."""
    flags = ["--skip-zero-adv", "--group-prompts"]
    plain = update(tiny_dense, tmp_path / "plain.json", *flags)
    single = update(tiny_dense, tmp_path / "single.json", *flags, "--share")
    assert single["metrics"]["shared"] == 1 and plain["metrics"]["shared"] == 0
    assert single["metrics"]["tokens/update"] < plain["metrics"]["tokens/update"]
    assert single["metrics"]["tokens/forward"] < plain["metrics"]["tokens/forward"]
    measured = {"tokens/update", "tokens/forward"}
    for key, value in plain["metrics"].items():
        if key not in measured | {"shared"}:
            assert single["metrics"][key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    for name, sums in plain["weights"].items():  # AdamW's first steps amplify rounding: as between layouts
        assert single["weights"][name] == pytest.approx(sums, rel=5e-4, abs=1e-4), name
    for flag in ([], ["--fsdp"]):
        got = update(tiny_dense, tmp_path / f"two{flag}.json", *flags, "--share", *flag, nproc=2)
        assert got["metrics"]["shared"] == 1
        assert got["metrics"]["tokens/update"] < plain["metrics"]["tokens/update"]
        for key in measured:
            got["metrics"][key] = single["metrics"][key]
        assert_same_update(got, single, rel=5e-4)


def test_fsdp_mixed_precision_keeps_rope_buffers_in_fp32(tiny_model, tmp_path):
    """bf16 compute under FSDP: the parameters are cast for the forward, RoPE's inv_freq is not (a bf16
    inv_freq puts positions of 1k-12k tokens off by radians)."""
    got = update(tiny_model, tmp_path / "bf16.json", "--fsdp", "--bf16", nproc=2)
    assert got["inv_freq"] == ["torch.float32"]


def test_a_vision_language_student_trains_on_text_data_under_ddp(tiny_vlm, tmp_path):
    """The README's GPU command on several GPUs (a Qwen3.5 checkpoint, vision tower included, on GSM8K-like
    text): DDP stopped at the first update ("parameters that were not used in producing loss"). Now it trains,
    and the vision tower, which no pass reached, is left exactly as it was, as one process leaves it."""
    out = str(tmp_path / "vlm_text")
    res = torchrun(os.path.join("tests", "parity_train.py"),
                   ["--student", tiny_vlm, *ARGS, "--steps", "2", "--out-dir", out],
                   env={"ACCELERATE_USE_CPU": "true"})
    assert res.returncode == 0, res.stderr[-3000:]
    metrics = read_metrics(out)
    assert [m["step"] for m in metrics] == [1, 2] and all(m["train/grad_norm"] > 0 for m in metrics)
    assert all(m["dist/weight_checksum_spread"] == 0.0 for m in metrics)
    before = load_file(os.path.join(tiny_vlm, "model.safetensors"))
    after = load_file(os.path.join(out, "checkpoints", "step_000002", "model.safetensors"))
    assert all(torch.equal(before[k], after[k]) for k in before if "visual" in k)
    assert not all(torch.equal(before[k], after[k]) for k in before if "visual" not in k)


@pytest.mark.parametrize("layout", ["ddp", "fsdp"])
def test_a_vision_language_student_trains_on_mixed_image_and_text_data(layout, tiny_vlm, images, tmp_path):
    """Mixed data on two ranks, shares uneven (5 questions x 3 rollouts), A = 0 sequences skipped: a rank's
    micro-batch may hold an image while the other's does not. Under FSDP (through accelerate launch
    --config_file configs/fsdp.yaml, as typed on GPUs) every rank must still run the same trainer passes; the
    run finishes, writes each checkpoint once, and the vision tower trains."""
    out, counts = str(tmp_path / layout), str(tmp_path / "passes")
    os.makedirs(counts)
    data = write_data(str(tmp_path), images, n=9)
    args = ["--student", tiny_vlm, "--teacher", "gold", "--data", data, *PIXELS, "--questions-per-step", "5",
            "--group-size", "3", "--max-new-tokens", "6", "--iters-per-step", "2", "--micro-batch-size", "2",
            "--lr", "1e-3", "--steps", "2", "--save-every", "1", "--keep-checkpoints", "5", "--out-dir", out]
    env = {"ZPPO_COUNT_PASSES": counts}
    res = accelerate_fsdp(args, env=env) if layout == "fsdp" else \
        torchrun(os.path.join("tests", "parity_train.py"), args, env={**env, "ACCELERATE_USE_CPU": "true"})
    assert res.returncode == 0, res.stderr[-3000:]
    assert [m["step"] for m in read_metrics(out)] == [1, 2]
    assert sorted(os.listdir(os.path.join(out, "checkpoints"))) == ["step_000001", "step_000002"]
    ranks = passes_of(counts)
    assert len(ranks) == 2 and ranks[0] == ranks[1] > 0
    before = load_file(os.path.join(tiny_vlm, "model.safetensors"))
    after = load_file(os.path.join(out, "checkpoints", "step_000002", "model.safetensors"))
    assert not all(torch.equal(before[k], after[k]) for k in before if "visual" in k)


def test_fsdp_resumes_on_another_number_of_processes(tiny_model, tmp_path):
    """The headline command's FSDP form on two CPU ranks, odd shares; then --resume of its step-1 checkpoint
    in one process without FSDP: the optimizer state is stored by parameter name, so it loads into any
    layout."""
    out, counts = str(tmp_path / "fsdp"), str(tmp_path / "passes")
    os.makedirs(counts)
    args = ["--student", tiny_model, *ARGS, "--questions-per-step", "5", "--group-size", "3", "--steps", "2",
            "--save-every", "1", "--keep-checkpoints", "5", "--out-dir", out]
    res = accelerate_fsdp(args, env={"ZPPO_COUNT_PASSES": counts})
    assert res.returncode == 0, res.stderr[-3000:]
    assert len(set(passes_of(counts))) == 1
    ckpt = os.path.join(out, "checkpoints", "step_000001")
    state = torch.load(os.path.join(ckpt, "trainer_state.pt"), weights_only=False)
    assert "model.layers.0.mlp.down_proj.weight" in state["optimizer"]["state"]  # by name, gathered whole
    assert len(state["rank_rngs"]) == 2
    res = subprocess.run([sys.executable, os.path.join("tests", "parity_train.py"), "--student", tiny_model,
                          *ARGS, "--questions-per-step", "5", "--group-size", "3", "--steps", "3",
                          "--resume", ckpt], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600,
                         check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "written by 2 processes, this run has 1" in res.stdout
    assert [m["step"] for m in read_metrics(out)] == [1, 2, 3]


def two_nodes(args):
    """Two "nodes" of one process each on loopback, as scripts/slurm.sh starts them on two machines
    (accelerate launch --config_file configs/fsdp.yaml --num_machines 2 --machine_rank 0|1, FSDP over both),
    sharing a run folder."""
    port, procs = free_port(), []
    for node in (0, 1):
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", "configs/fsdp.yaml",
               "--num_machines", "2", "--num_processes", "2", "--machine_rank", str(node),
               "--main_process_ip", "127.0.0.1", "--main_process_port", str(port), "--mixed_precision", "no",
               os.path.join("tests", "parity_train.py"), *args]
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=ENV, text=True, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT))
    for proc in procs:
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out[-3000:]


def test_two_nodes_train_and_resume_exactly_across_them(tiny_model, tmp_path):
    """Multi-node in the form scripts/slurm.sh runs: 2 steps on two nodes, then --resume to step 3 on two
    nodes again (a requeued job): the same metrics and weights as 3 uninterrupted steps (each rank continues
    from its own random state; the sharded optimizer state is gathered into the checkpoint and sharded
    back)."""
    base = ["--student", tiny_model, *ARGS, "--save-every", "1", "--keep-checkpoints", "5"]
    straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
    two_nodes([*base, "--steps", "3", "--out-dir", straight])
    two_nodes([*base, "--steps", "2", "--out-dir", resumed])
    assert not os.path.exists(os.path.join(resumed, "lock"))  # released at exit
    two_nodes([*base, "--steps", "3", "--resume", resumed])
    drop = lambda m: {k: v for k, v in m.items() if not k.startswith(MEASURED)}
    assert [drop(m) for m in read_metrics(resumed)] == [drop(m) for m in read_metrics(straight)]
    a = load_file(os.path.join(straight, "checkpoints", "step_000003", "model.safetensors"))
    b = load_file(os.path.join(resumed, "checkpoints", "step_000003", "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
