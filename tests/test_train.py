"""End to end on a tiny random-weight Qwen3.5: the loop, its groups, checkpoints, resume, eval."""
import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

import checkpoint
import train
from conftest import ROOT
from engines import transformers_engine
from engines.transformers_engine import TransformersEngine
from logprobs import response_logprobs
from models import load_model
from zppo import Episode

ARGS = ["--teacher", "gold", "--data", "arithmetic", "--data-limit", "40", "--questions-per-step", "8",
        "--group-size", "4", "--max-new-tokens", "12", "--iters-per-step", "2", "--lr", "1e-3",
        "--micro-batch-size", "4"]


def read_metrics(out_dir):
    with open(os.path.join(out_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_response_logprobs_match_unpadded_forward_and_sampling(tiny_model):
    """Padding in the batched trainer forward must not change any log-prob (hybrid attention included),
    and the engine's sampling log-probs must equal the trainer's recomputation."""
    model, tok = load_model(tiny_model)
    engine = TransformersEngine(model, tok)
    groups = engine.generate(["What is 1 + 2?", "Hi", "What is 10 - 7? Think hard."], n=2, max_new_tokens=10,
                             temperature=0.7, top_k=50)
    seqs = [Episode(r.prompt_ids, r.token_ids) for g in groups for r in g]
    assert len({len(s.prompt_ids) for s in seqs}) == 3
    with torch.no_grad():
        batched, mask, _ = response_logprobs(model, seqs, 0.7, tok.pad_token_id)
        for b, (s, r) in enumerate(zip(seqs, [r for g in groups for r in g])):
            alone, _, _ = response_logprobs(model, [s], 0.7, tok.pad_token_id)
            n = len(s.token_ids)
            assert mask[b].sum() == n
            assert torch.allclose(batched[b, :n], alone[0, :n], atol=1e-4)
            assert torch.allclose(alone[0, :n], torch.tensor(r.logprobs), atol=1e-4)


@pytest.mark.parametrize("kind", ["dense", "hybrid"])
def test_a_prompt_s_rollouts_share_its_prefill_where_the_cache_allows(kind, tiny_dense, tiny_model,
                                                                      monkeypatch):
    """A prompt's n rollouts start from one prefill of it (plain attention: its cache repeated n times), with
    the same tokens and log-probs as n prefills; Qwen3.5's linear-attention layers keep states that cannot be
    repeated, so it prefills every row. Prompts of other lengths (left padding) and a batch split into
    chunks (max_batch_size) included."""
    model, tok = load_model(tiny_dense if kind == "dense" else tiny_model)
    engine = TransformersEngine(model, tok, max_batch_size=6)  # 2 prompts x 3 rows a chunk
    prompts = ["What is 1 + 2?", "Hi", "What is 10 - 7? Think hard, then answer."]
    shared = []
    real = TransformersEngine._shared_prefill

    def spy(self, *a):
        shared.append(real(self, *a))
        return shared[-1]

    monkeypatch.setattr(TransformersEngine, "_shared_prefill", spy)
    greedy = dict(n=3, max_new_tokens=8, temperature=0.0)
    once = engine.generate(prompts, **greedy)
    assert len(shared) == 2 and all(bool(s) == (kind == "dense") for s in shared)  # two chunks
    monkeypatch.setattr(TransformersEngine, "_shared_prefill", lambda self, *a: {})  # every row its own
    every = engine.generate(prompts, **greedy)
    for g1, g2, prompt in zip(once, every, prompts):
        assert len(g1) == len(g2) == 3
        for a, b in zip(g1, g2):
            assert a.prompt_ids == b.prompt_ids and a.token_ids == b.token_ids and a.token_ids
            assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)
    sampled = engine.generate(prompts, n=4, max_new_tokens=6, temperature=1.0)
    assert [len(g) for g in sampled] == [4, 4, 4]


def test_cli_trains_two_steps_with_bcq_and_ncq_groups_and_eval_scores_it(tiny_model, tmp_path):
    out = str(tmp_path / "run")
    cmd = [sys.executable, "train.py", "--student", tiny_model, *ARGS, "--steps", "2", "--out-dir", out,
           "--dump-reformulated"]
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True)
    metrics = read_metrics(out)
    assert [m["step"] for m in metrics] == [1, 2]
    # a random model fails everything: all questions are hard; cap = round(0.25 * 8) = 2 instances per step,
    # so the hardest question gets its BCQ (gold teacher) and its NCQ
    for m in metrics:
        assert m["count/hard"] == m["count/questions"] and m["count/bcq"] == 1 and m["count/ncq"] == 1
        assert m["count/plain_zero"] == m["count/questions"] and m["count/zero_reformulated"] == 2
        assert m["count/bcq_zero"] == 1 and m["acc/bcq_zero"] == m["acc/bcq"]
        assert m["buffer/size"] > 0 and "time/update" in m and "policy/entropy" in m
    assert metrics[1]["count/replayed"] == 2  # round(0.25 * 8) drawn from the buffer
    with open(os.path.join(out, "reformulated.jsonl")) as f:
        dumped = [json.loads(line) for line in f]
    assert {d["kind"] for d in dumped} == {"bcq", "ncq"} and all(len(d["rollouts"]) == 4 for d in dumped)
    bcq = next(d for d in dumped if d["kind"] == "bcq")
    assert bcq["prompt"].count("\n<candidate>\n") == 2 and f"\\boxed{{{bcq['answer']}}}" in bcq["prompt"]
    ckpt = os.path.join(out, "checkpoints", "step_000002")
    assert os.path.exists(os.path.join(ckpt, "model.safetensors"))
    with open(os.path.join(out, "latest")) as f:
        assert f.read() == "step_000002"

    (tmp_path / "math500.jsonl").write_text("".join(json.dumps({"problem": f"What is {i} + 1?",
                                                                 "answer": str(i + 1)}) + "\n"
                                                    for i in range(5)))
    res = subprocess.run([sys.executable, "eval.py", "--model", ckpt, "--benchmarks", "math500", "--data-dir",
                          str(tmp_path), "--max-new-tokens", "8", "--samples", "2",
                          "--out", str(tmp_path / "res.json")],
                         cwd=ROOT, check=True, capture_output=True, text=True)
    assert "| math500 | math |" in res.stdout
    with open(tmp_path / "res.json") as f:
        result = json.load(f)["benchmarks"]["math500"]
    assert result["questions"] == 5 and result["samples"] == 2 and result["accuracy"] == 0.0


def parity_grade(text, gold):
    """A forced reward: right when the response has an even number of characters. Deterministic in the
    text, so the random tiny model gets mixed groups and the update has real, non-zero advantages."""
    return float(len(text) % 2 == 0)


def test_resume_continues_exactly(tiny_model, tmp_path, monkeypatch):
    """Also with an evaluation every step: it runs after the checkpoint and samples from a forked random
    state, so the straight run (no checkpoint at step 1) and the resumed one sample the same step 2."""
    monkeypatch.setattr("reward.grade", parity_grade)
    straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
    args = ["--student", tiny_model, *ARGS, "--eval-benchmarks", "arithmetic", "--eval-every", "1",
            "--eval-limit", "2", "--eval-max-new-tokens", "4"]
    train.main(train.parse_config([*args, "--steps", "2", "--out-dir", straight]))
    train.main(train.parse_config([*args, "--steps", "1", "--out-dir", resumed]))
    train.main(train.parse_config([*args, "--steps", "2", "--out-dir", resumed, "--resume", resumed]))
    a, b = (os.path.join(d, "checkpoints", "step_000002") for d in (straight, resumed))
    wa, wb = load_file(os.path.join(a, "model.safetensors")), load_file(os.path.join(b, "model.safetensors"))
    w0 = load_file(os.path.join(tiny_model, "model.safetensors"))
    assert any(not torch.equal(wa[k], w0[k]) for k in w0)  # the forced rewards moved the weights
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)
    states = []
    for d in (a, b):
        with open(os.path.join(d, "state.json")) as f:
            states.append(json.load(f))
    sa, sb = states
    assert sa["step"] == sb["step"] == 2 and sa["buffer"] == sb["buffer"]
    assert (sa["data_epoch"], sa["data_pos"]) == (sb["data_epoch"], sb["data_pos"])
    ma, mb = read_metrics(straight), read_metrics(resumed)
    assert [m["step"] for m in mb] == [1, 2]
    for key in ("acc/plain", "adv/positive_frac", "train/loss", "buffer/size"):
        assert ma[1][key] == pytest.approx(mb[1][key], abs=1e-6)
    assert 0 < ma[0]["adv/positive_frac"] < 1 and ma[0]["groups/trivial_frac"] < 1


def test_algo_grpo_turns_off_buffer_and_reformulation(tiny_model, tmp_path):
    cfg = train.parse_config(["--student", tiny_model, *ARGS, "--steps", "1", "--algo", "grpo",
                              "--out-dir", str(tmp_path / "g")])
    assert (cfg.buffer, cfg.bcq, cfg.ncq) == (False, False, False)
    (m,) = read_metrics(os.path.dirname(train.main(cfg)))
    assert m["count/bcq"] == m["count/ncq"] == 0 and m["count/replayed"] == 0 and m["buffer/size"] == 0
    cfg = train.parse_config(["--algo", "grpo", "--buffer"])  # a flag given explicitly beats the preset
    assert (cfg.buffer, cfg.bcq, cfg.ncq) == (True, False, False)


def test_resume_from_a_folder_without_checkpoint_fails_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        checkpoint.find_checkpoint(str(tmp_path))


def test_model_teacher_generates_and_compresses_candidates(tiny_model, tmp_path, monkeypatch):
    """A model teacher (not gold) goes through the same engine: G_T rollouts graded by the reward, and
    every candidate rewritten through the compression prompt before it enters a BCQ/NCQ prompt."""
    prompts_seen = []
    real_generate = transformers_engine.TransformersEngine.generate

    def spy(self, prompts, *a, **kw):
        prompts_seen.extend(prompts)
        return real_generate(self, prompts, *a, **kw)

    monkeypatch.setattr(transformers_engine.TransformersEngine, "generate", spy)
    monkeypatch.setattr("reward.grade", lambda text, gold: float(text.startswith("\x00never")))  # all wrong
    # the teacher judges unboxed rollouts: keep replies short
    monkeypatch.setattr("reward.JUDGE_MAX_NEW_TOKENS", 8)
    out = str(tmp_path / "t")
    args = ["--student", tiny_model, "--teacher", tiny_model, "--teacher-group-size", "2",
            "--teacher-max-new-tokens", "6", "--compress-max-new-tokens", "6", "--steps", "1",
            "--out-dir", out]
    train.main(train.parse_config([*ARGS[2:], *args, "--dump-reformulated"]))
    (m,) = read_metrics(out)
    # no teacher rollout is correct: no BCQ, the two capped slots go to NCQ of the two hardest questions
    assert m["count/bcq"] == 0 and m["count/ncq"] == 2 and m["count/no_teacher_correct"] == 2
    assert sum(p.startswith("Compress the response below") for p in prompts_seen) > 0
    assert m["time/teacher"] > 0 and m["time/compress"] > 0

    prompts_seen.clear()
    monkeypatch.setattr("reward.grade", parity_grade)
    out2 = str(tmp_path / "t2")
    train.main(train.parse_config([*ARGS[2:], *args[:-1], out2, "--dump-reformulated", "--no-compress"]))
    assert not any(p.startswith("Compress the response below") for p in prompts_seen)


def test_the_engine_draws_from_softmax_under_temperature_top_k_and_top_p():
    """The transformers engine draws its tokens itself (engines.transformers_engine.Draw: the inverse of each
    row's cumulative distribution) after transformers' own warpers: the frequencies of 20,000 draws are the
    distribution's, a word of probability 0 is never drawn, and exactly one word is left for generate."""
    from engines.transformers_engine import sampler

    probs = torch.tensor([0.5, 0.3, 0.15, 0.05, 0.0])
    sqrt = probs.sqrt() / probs.sqrt().sum()  # softmax(log p / 2)
    torch.manual_seed(0)
    for (temperature, top_p, top_k), want in [((1.0, 1.0, 0), probs),
                                              ((1.0, 1.0, 2), torch.tensor([0.625, 0.375, 0, 0, 0])),
                                              ((1.0, 0.7, 0), torch.tensor([0.625, 0.375, 0, 0, 0])),
                                              ((2.0, 1.0, 0), sqrt)]:
        scores = probs.log().repeat(20000, 1)  # (rows, vocab); log 0 = -inf
        for processor in sampler(temperature, top_p, top_k):
            scores = processor(None, scores)
        assert ((scores == 0).sum(-1) == 1).all() and (torch.isinf(scores).sum(-1) == 4).all()
        freq = torch.bincount(scores.argmax(-1), minlength=5) / 20000
        assert torch.allclose(freq, want.float(), atol=0.012), (temperature, top_p, top_k, freq)
        assert freq[4] == 0 and (freq[want == 0] == 0).all()


def test_presence_penalty_discourages_repeated_tokens(tiny_model):
    model, tok = load_model(tiny_model)
    engine = TransformersEngine(model, tok)
    plain = engine.generate(["What is 1 + 2?"], n=1, max_new_tokens=24, temperature=0.0)[0][0]
    penalised = engine.generate(["What is 1 + 2?"], n=1, max_new_tokens=24, temperature=0.0,
                                presence_penalty=1e4)[0][0]
    # greedy decoding of a random model repeats itself
    assert len(set(plain.token_ids)) < len(plain.token_ids)
    assert len(set(penalised.token_ids)) == len(penalised.token_ids)


def test_eval_runs_inside_training_and_lands_in_the_step_metrics(tiny_model, tmp_path):
    out = str(tmp_path / "e")
    # an unknown name stops at start (test_recovery)
    cfg = train.parse_config(["--student", tiny_model, *ARGS, "--steps", "2", "--out-dir", out,
                              "--algo", "grpo", "--eval-benchmarks", "arithmetic", "--eval-every", "1",
                              "--eval-limit", "3", "--eval-max-new-tokens", "4"])
    train.main(cfg)
    metrics = read_metrics(out)
    assert [m["step"] for m in metrics] == [1, 2]  # one line per step, eval scores included
    assert all(m["eval/arithmetic"] == 0.0 and m["eval/macro_math"] == 0.0 for m in metrics)
    assert not any("eval/failed" in m for m in metrics)


def test_bare_qwen_names_mean_the_qwen_hub_repository(tmp_path):
    from models import resolve_model_name

    assert resolve_model_name("Qwen3.5-0.8B") == "Qwen/Qwen3.5-0.8B"
    assert resolve_model_name("Qwen/Qwen3.5-27B-FP8") == "Qwen/Qwen3.5-27B-FP8"
    assert resolve_model_name("someorg/model") == "someorg/model"
    local = tmp_path / "Qwen3.5-local"
    local.mkdir()
    assert resolve_model_name(str(local)) == str(local)  # a path is a local model, whatever its name


def test_step_metrics_count_the_all_wrong_groups_a_reformulation_turned_into_signal():

    from buffer import ReplayBuffer
    from rollout import Rollout
    from zppo import Group, episodes_of, step_metrics

    def group(qid, kind, rewards):
        return Group({"id": qid}, kind, "Q", rollouts=[Rollout("", [1], [2, 3])] * len(rewards),
                     rewards=rewards)

    # q/a: 0/4 plain, BCQ 1/4 right, NCQ 0/4; q/b: 0/4 plain, only an NCQ, 2/4 right;
    # q/c: 2/4 plain, a BCQ 4/4
    plain = [group("q/a", "plain", [0, 0, 0, 0]), group("q/b", "plain", [0] * 4),
             group("q/c", "plain", [1, 1, 0, 0])]
    helped = [group("q/a", "bcq", [1, 0, 0, 0]), group("q/a", "ncq", [0] * 4),
              group("q/b", "ncq", [1, 1, 0, 0]), group("q/c", "bcq", [1] * 4)]
    m = step_metrics(plain, helped, episodes_of(plain + helped), 3, ReplayBuffer(), buffered=False)
    assert m["count/plain_zero"] == 2 and m["count/zero_reformulated"] == 3  # a/bcq, a/ncq, b/ncq
    assert m["count/zero_solved"] == 2  # a/bcq and b/ncq have a right rollout; a/ncq does not
    assert m["count/bcq_zero"] == 1 and m["acc/bcq_zero"] == 0.25  # q/c's BCQ is not on a 0/4 question
    assert m["acc/bcq"] == 5 / 8


# Qwen3's and Qwen3.5's switch: the assistant turn opens with an empty think block if enable_thinking is false
THINKING_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}"
    "{% endif %}")


def test_a_thinking_template_gets_the_switch_only_in_short_calls(tiny_model):
    """models.short_calls: off opens the turn with the empty think block the template writes for
    enable_thinking=False, on and template leave it to think; the engine itself (the teacher's rollouts)
    passes nothing."""
    from models import short_calls

    model, tok = load_model(tiny_model)
    tok.chat_template = THINKING_TEMPLATE
    engine = TransformersEngine(model, tok)

    def opening(e):
        (rollout,) = e.generate(["What is 1 + 2?"], n=1, max_new_tokens=2, temperature=0.0)[0]
        return tok.decode(rollout.prompt_ids).split("<|im_start|>assistant\n")[1]

    assert opening(short_calls(engine, "off")) == "<think>\n\n</think>\n\n"
    assert opening(short_calls(engine, "on")) == opening(engine) == ""
    assert short_calls(engine, "template") is engine and short_calls(None, "off") is None
