"""The vLLM glue against a fake `vllm` module (tests/fake_vllm.py) injected at the import boundary."""

import pytest

import train
from rollout import VLLMEngine, load_model, vllm_sampling_params
from test_train import ARGS, parity_grade, read_metrics


def test_sampling_parameters_are_mapped(fake):
    p = vllm_sampling_params(4, 128, 0.6, 0.95, 20, 0.0, 1.5)
    assert (p.n, p.max_tokens, p.temperature, p.top_p, p.top_k, p.min_p, p.presence_penalty, p.logprobs) == \
        (4, 128, 0.6, 0.95, 20, 0.0, 1.5, 0)
    assert vllm_sampling_params(1, 8, 1.0, 1.0, 0, 0.0, 0.0).top_k == -1  # our 0 = off is vLLM's -1


def test_engine_builds_the_colocated_llm_and_parses_outputs(fake, tiny_model):
    _, tok = load_model(tiny_model)
    engine = VLLMEngine(tiny_model, tok, gpu_memory_utilization=0.25, max_model_len=512, seed=3)
    (llm,) = fake.LLM.instances
    assert llm.kwargs["distributed_executor_backend"] == "external_launcher"
    assert (llm.kwargs["gpu_memory_utilization"], llm.kwargs["max_model_len"], llm.kwargs["seed"]) == (0.25, 512, 3)
    groups = engine.generate(["What is 1 + 1?", "Hi"], n=3, max_new_tokens=5, temperature=0.8)
    assert [len(g) for g in groups] == [3, 3]
    r = groups[0][0]
    assert r.prompt_ids[:1] == tok.apply_chat_template([{"role": "user", "content": "x"}], add_generation_prompt=True,
                                                       tokenize=True, return_dict=False)[:1]
    assert len(r.token_ids) == len(r.logprobs) > 0 and all(lp <= 0 for lp in r.logprobs)
    assert r.finish_reason in ("stop", "length") and isinstance(r.text, str)


def test_sleep_mode_wakes_around_generation_and_sync(fake, tiny_model):
    model, tok = load_model(tiny_model)
    engine = VLLMEngine(tiny_model, tok, sleep=True)
    (llm,) = fake.LLM.instances
    engine.generate(["a"], n=1, max_new_tokens=2)
    engine.sync_weights(model)
    assert llm.events == ["sleep1", "wake_up", "generate", "sleep1", "wake_up", "reset_prefix_cache", "sleep1"]
    assert llm.kwargs["enable_sleep_mode"] is True


def test_training_pushes_weights_every_step_and_checks_sync(fake, tiny_model, tmp_path, monkeypatch):
    monkeypatch.setattr(train, "grade", parity_grade)  # mixed groups: the weights really change
    out = str(tmp_path / "v")
    train.main(train.parse_config(["--student", tiny_model, *ARGS, "--steps", "3", "--out-dir", out,
                                   "--engine", "vllm"]))
    (llm,) = fake.LLM.instances
    assert len(llm.llm_engine.model_executor.driver_worker.worker.model_runner.model.loads) == 3
    assert llm.events.count("reset_prefix_cache") == 3
    loaded = set(llm.llm_engine.model_executor.driver_worker.worker.model_runner.model.loads[0])
    assert "model.embed_tokens.weight" in loaded and len(loaded) > 10
    for m in read_metrics(out):
        assert m["sync/logprob_abs_diff"] < 1e-3  # engine and trainer agree: weights are in sync


def test_a_silent_sync_failure_is_caught_by_the_check(fake, tiny_model, tmp_path, monkeypatch):
    monkeypatch.setattr(train, "grade", parity_grade)
    monkeypatch.setattr(fake.LLM, "ignore_weights", True)  # the engine keeps sampling from the first weights
    out = str(tmp_path / "s")
    with pytest.warns(UserWarning, match="engine and trainer log-probs differ"):
        train.main(train.parse_config(["--student", tiny_model, *ARGS, "--lr", "3e-2", "--steps", "3",
                                       "--out-dir", out, "--engine", "vllm", "--sync-warn", "0.01"]))
    gaps = [m["sync/logprob_abs_diff"] for m in read_metrics(out)]
    assert gaps[0] < 1e-3 and gaps[-1] > 0.01


def test_in_process_teacher_can_be_a_frozen_vllm_engine(fake, tiny_model, tmp_path, monkeypatch):
    monkeypatch.setattr(train, "grade", lambda text, gold: 0.0)
    monkeypatch.setattr("reward.JUDGE_MAX_NEW_TOKENS", 8)  # the teacher judges unboxed rollouts: keep replies short
    out = str(tmp_path / "t")
    train.main(train.parse_config(["--student", tiny_model, *ARGS[2:], "--teacher", tiny_model, "--steps", "1",
                                   "--engine", "vllm", "--teacher-max-new-tokens", "4", "--compress-max-new-tokens", "4",
                                   "--out-dir", out]))
    student, teacher = fake.LLM.instances
    assert teacher.kwargs["gpu_memory_utilization"] == 0.4 and "generate" in teacher.events
    assert student.events.count("reset_prefix_cache") == 1 and "reset_prefix_cache" not in teacher.events
    assert read_metrics(out)[0]["count/ncq"] == 2
