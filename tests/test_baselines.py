"""The paper's baselines (config.PRESETS, baselines.py's Hint and Prefix groups and distillation): presets and
start-up checks, the JSD and its chunked form, Hint's prompts and leak count, Prefix's masking, Off-Distill's
single update, and exact resume for every --algo. A tiny student and a tiny teacher of another width share one
tokenizer (trained on the same corpus)."""
import json
import math
import os
import random
import types
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file
from torch.optim.optimizer import register_optimizer_step_post_hook

import train
from baselines import (
    baseline_metrics,
    hint_groups,
    hint_leaks,
    jsd_update,
    off_distill_targets,
    prefix_ids,
    shared_teacher,
)
from engines.server import RemoteEngine
from engines.transformers_engine import TransformersEngine
from logprobs import ChunkedJSD, generalized_jsd, response_jsd, response_logprobs
from models import load_model
from reformulate import with_closer
from rollout import Rollout, chat_prompt_ids
from test_train import parity_grade, read_metrics
from tiny import SHAPE_TINY, VISION_TINY, build_random_model
from zppo import Episode, Group, plan_minibatches, policy_loss, ppo_update

SMALL = ["--data", "arithmetic", "--data-limit", "16", "--questions-per-step", "4", "--group-size", "2",
         "--teacher-group-size", "2", "--max-new-tokens", "6", "--teacher-max-new-tokens", "6",
         "--hint-max-new-tokens", "6", "--compress-max-new-tokens", "4", "--rho-aug", "0.5", "--tau", "0.75",
         "--iters-per-step", "2", "--lr", "1e-3", "--micro-batch-size", "4"]  # tau 0.75: 1/2 is hard too


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory):
    """Wider than the student (96 vs 64 hidden), same tokenizer: the same corpus trains the same
    vocabulary."""
    shape = {**SHAPE_TINY, "hidden_size": 96, "intermediate_size": 192}
    return build_random_model(str(tmp_path_factory.mktemp("tiny_teacher")), shape, seed=1)


@pytest.fixture(autouse=True)
def short_judge_replies(monkeypatch):
    """With a model teacher every unboxed rollout goes to it as judge (Exact+Judge); a random tiny teacher
    would write 512 tokens of noise for each: 8 keep the runs short and score the same (never valid JSON)."""
    monkeypatch.setattr("reward.JUDGE_MAX_NEW_TOKENS", 8)


def args(student, teacher, algo, out, *extra):
    return ["--student", student, "--teacher", teacher, *SMALL, "--algo", algo, "--out-dir", str(out), *extra]


# ---------------------------------------------------------------------------------------------------------
# flags


def test_presets_and_an_explicit_buffer_flag_wins():
    parse = lambda *a: train.parse_config(["--teacher", "T", *a])
    off = (False, False, False)
    want = {"zppo": (True, True, True), "grpo": off, "hint": (True, False, False),
            "prefix": (True, False, False), "off_distill": off, "on_distill": off}
    for algo, flags in want.items():
        cfg = parse("--algo", algo)
        assert (cfg.buffer, cfg.bcq, cfg.ncq) == flags, algo
    assert parse("--algo", "hint", "--no-buffer").buffer is False
    assert parse("--algo", "off_distill", "--buffer").buffer is True
    assert parse("--algo", "on_distill").teacher_engine == "transformers"
    assert (parse("--algo", "prefix").prefix_frac, parse("--algo", "off_distill").jsd_beta) == (0.4, 0.5)


@pytest.mark.parametrize("argv, message", [
    (["--algo", "hint", "--teacher", "gold"], "must be a model"),
    (["--algo", "hint"], "must be a model"),
    (["--algo", "prefix"], "needs --teacher"),
    (["--algo", "off_distill", "--teacher", "T", "--teacher-url", "http://x:8000"], "top-k log-probs"),
    (["--algo", "on_distill", "--teacher", "gold"], "full next-token distributions"),
    (["--algo", "on_distill", "--teacher", "T", "--teacher-engine", "vllm"], "teacher-engine transformers"),
    (["--algo", "hint", "--teacher", "T", "--bcq"], "no BCQ/NCQ"),
    (["--algo", "off_distill", "--teacher", "T", "--jsd-beta", "1"], "jsd-beta"),
    (["--algo", "prefix", "--teacher", "gold", "--prefix-frac", "0"], "prefix-frac"),
])
def test_baselines_stop_at_start_when_the_teacher_cannot_serve_them(argv, message):
    with pytest.raises(ValueError, match=message):
        train.parse_config(argv)
    train.parse_config(["--algo", "prefix", "--teacher", "gold"])  # gold solutions serve as Prefix's rollouts
    # hints are text
    train.parse_config(["--algo", "hint", "--teacher", "T", "--teacher-url", "http://x:8000"])


def test_distillation_needs_the_students_vocabulary(tiny_model, tiny_teacher):
    student, tok = load_model(tiny_model)
    teacher, teacher_tok = load_model(tiny_teacher)
    assert shared_teacher(types.SimpleNamespace(model=teacher, tokenizer=teacher_tok), tok,
                          student) is teacher
    teacher_tok.add_tokens(["<only-the-teacher-knows>"])
    with pytest.raises(ValueError, match="vocabularies differ"):
        shared_teacher(types.SimpleNamespace(model=teacher, tokenizer=teacher_tok), tok, student)
    with pytest.raises(ValueError, match="in-process transformers teacher"):
        shared_teacher(types.SimpleNamespace(), tok, student)


# ---------------------------------------------------------------------------------------------------------
# the JSD


def test_jsd_equals_the_hand_computed_value_on_three_tokens_of_five_words():
    T = torch.tensor([[0.4, 0.3, 0.1, 0.1, 0.1], [0.2] * 5, [0.6, 0.1, 0.1, 0.1, 0.1]], dtype=torch.float64)
    S = torch.tensor([[0.1, 0.1, 0.1, 0.3, 0.4], [0.2] * 5, [0.2] * 5], dtype=torch.float64)
    ln = math.log
    # beta 0.5: M = (T + S) / 2, JSD = KL(T || M) / 2 + KL(S || M) / 2
    # token 1: M = .25 .2 .1 .2 .25
    kl_t = 0.4 * ln(0.4 / 0.25) + 0.3 * ln(0.3 / 0.2) + 0.1 * ln(0.1 / 0.1) + 0.1 * ln(0.1 / 0.2) \
        + 0.1 * ln(0.1 / 0.25)
    kl_s = 0.1 * ln(0.1 / 0.25) + 0.1 * ln(0.1 / 0.2) + 0.1 * ln(0.1 / 0.1) + 0.3 * ln(0.3 / 0.2) \
        + 0.4 * ln(0.4 / 0.25)
    t1 = (kl_t + kl_s) / 2
    t2 = 0.0  # identical distributions
    # token 3: M = .4 .15 .15 .15 .15
    t3 = (0.6 * ln(0.6 / 0.4) + 4 * 0.1 * ln(0.1 / 0.15) + 0.2 * ln(0.2 / 0.4) + 4 * 0.2 * ln(0.2 / 0.15)) / 2
    got = generalized_jsd(S.log(), T.log(), 0.5)
    assert torch.allclose(got, torch.tensor([t1, t2, t3], dtype=torch.float64), atol=1e-12)
    assert got.mean().item() == pytest.approx((t1 + t2 + t3) / 3, abs=1e-12)  # the token-level mean
    # beta 0.25 by hand on token 3: M = .25 T + .75 S = .3 .175 .175 .175 .175
    m = [0.3] + [0.175] * 4
    want = 0.25 * sum(t * ln(t / mi) for t, mi in zip(T[2].tolist(), m)) + \
        0.75 * sum(s * ln(s / mi) for s, mi in zip(S[2].tolist(), m))
    assert generalized_jsd(S[2].log(), T[2].log(), 0.25).item() == pytest.approx(want, abs=1e-12)


def test_jsd_is_zero_for_identical_distributions_and_symmetric_at_one_half():
    g = torch.Generator().manual_seed(0)
    a = torch.log_softmax(torch.randn(6, 11, generator=g, dtype=torch.float64), -1)
    b = torch.log_softmax(torch.randn(6, 11, generator=g, dtype=torch.float64), -1)
    assert torch.allclose(generalized_jsd(a, a, 0.5), torch.zeros(6, dtype=torch.float64), atol=1e-15)
    assert torch.allclose(generalized_jsd(a, a, 0.2), torch.zeros(6, dtype=torch.float64), atol=1e-15)
    assert torch.allclose(generalized_jsd(a, b, 0.5), generalized_jsd(b, a, 0.5), atol=1e-14)
    # beta weighs the two sides
    assert not torch.allclose(generalized_jsd(a, b, 0.2), generalized_jsd(b, a, 0.2))
    assert (generalized_jsd(a, b, 0.5) > 0).all() and (generalized_jsd(a, b, 0.5) <= math.log(2)).all()


@pytest.mark.parametrize("beta, temperature", [(0.5, 1.0), (0.3, 0.7)])
def test_chunked_jsd_equals_the_full_logits_computation_in_value_and_gradient(beta, temperature):
    g = torch.Generator().manual_seed(1)
    N, V, H, Ht = 7, 13, 5, 9
    rand = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64)
    h, W, th, tW = rand(N, H).requires_grad_(), rand(V, H).requires_grad_(), rand(N, Ht), rand(V, Ht)
    weights = rand(N)  # an arbitrary weighting of the per-token values, so every gradient row differs
    got = ChunkedJSD.apply(h, W, th, tW, temperature, beta, 3)  # chunks of 3, 3, 1 positions
    (got * weights).sum().backward()
    grad_h, grad_W = h.grad.clone(), W.grad.clone()
    h.grad = W.grad = None
    want = generalized_jsd(torch.log_softmax(h @ W.T / temperature, -1),
                           torch.log_softmax(th @ tW.T / temperature, -1), beta)
    (want * weights).sum().backward()
    assert torch.allclose(got, want, atol=1e-13)
    assert torch.allclose(grad_h, h.grad, atol=1e-12) and torch.allclose(grad_W, W.grad, atol=1e-12)


def test_response_jsd_reads_both_models_at_the_response_positions(tiny_model, tiny_teacher):
    """Padded batch of two lengths, two models of different widths: equal to the full-logits JSD of the same
    positions, in value and in the student's gradient; the teacher gets no gradient."""
    student, tok = load_model(tiny_model, dtype=torch.float64)
    teacher, _ = load_model(tiny_teacher, dtype=torch.float64)
    teacher.requires_grad_(False)
    seqs = [Episode([5, 6, 7, 8], [9, 10, 11]), Episode([12, 13], [14, 15, 16, 17, 18])]
    jsd, mask = response_jsd(student, teacher, seqs, 0.8, tok.pad_token_id, beta=0.5, chunk_tokens=3)
    (jsd * mask).sum().backward()
    got = {n: p.grad.clone() for n, p in student.named_parameters()}
    student.zero_grad()
    total = 0
    for b, s in enumerate(seqs):  # one unpadded sequence at a time, full logits of both models
        ids = torch.tensor([s.prompt_ids + s.token_ids])
        P, R = len(s.prompt_ids), len(s.token_ids)
        ls = torch.log_softmax(student(input_ids=ids).logits[0, P - 1:P + R - 1] / 0.8, -1)
        lt = torch.log_softmax(teacher(input_ids=ids).logits[0, P - 1:P + R - 1] / 0.8, -1)
        ref = generalized_jsd(ls, lt, 0.5)
        assert torch.allclose(jsd[b, :R], ref, atol=1e-10) and mask[b].sum() == R
        total = total + ref.sum()
    total.backward()
    for name, p in student.named_parameters():  # (padding alone moves the linear-attention gradient ~1e-9)
        assert torch.allclose(got[name], p.grad, atol=1e-8, rtol=1e-6), name
    assert all(p.grad is None for p in teacher.parameters())
    assert "forward" not in vars(student.lm_head) and "forward" not in vars(teacher.lm_head)


def test_response_jsd_with_a_bf16_teacher_under_bf16_autocast(tiny_model, tiny_teacher):
    """The GPU setting's dtypes (the frozen teacher in bf16, the student's update under bf16 autocast): the
    JSD comes out in fp32 and tracks the fp32 computation."""
    student, tok = load_model(tiny_model)
    teacher, _ = load_model(tiny_teacher)
    seqs = [Episode([5, 6, 7], [8, 9, 10, 11]), Episode([5], [12, 13])]
    with torch.no_grad():
        ref, mask = response_jsd(student, teacher, seqs, 1.0, tok.pad_token_id)
        teacher.to(torch.bfloat16)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got, _ = response_jsd(student, teacher, seqs, 1.0, tok.pad_token_id, chunk_tokens=2)
    m = mask.bool()
    assert got.dtype == torch.float32 and (ref[m] > 0).all()
    assert torch.allclose(got[m], ref[m], rtol=0.02, atol=0)  # 0.1% apart here


# ---------------------------------------------------------------------------------------------------------
# Hint


class ScriptedTeacher:
    """An engine that answers every prompt with the next scripted text (records the prompts it was sent)."""

    def __init__(self, replies):
        self.replies, self.prompts, self.calls = list(replies), [], []

    def generate(self, prompts, n=1, **sampling):
        self.prompts += prompts
        self.calls.append(sampling)
        return [[Rollout(text=self.replies.pop(0), prompt_ids=[1], token_ids=[7, 8]) for _ in range(n)]
                for _ in prompts]


def test_hint_prompts_hold_the_teachers_hint_and_leaks_are_counted():
    questions = [{"id": str(i), "question": f"What is {i} + 2?", "answer": str(i + 2)} for i in range(4)]
    teacher = ScriptedTeacher(["<think>scratch 3</think> add two", "it is \\boxed{}", "the sum is 5"])
    # kept hardest first: 2, 0, 3, 1; question 1 has no correct teacher rollout and gets no hint
    correct = {i: [Rollout(t, [], []) for t in ts]
               for i, ts in {2: ["T2"], 0: ["T0a", "T0b"], 3: ["T3"], 1: []}.items()}
    plain = [Group(q, "plain", q["question"]) for q in questions]
    groups = hint_groups(plain, [2, 0, 3, 1], correct, random.Random(0), teacher, 512)
    prompts = [g.text for g in groups]
    assert [(g.question["id"], g.kind) for g in groups] == [("2", "hint"), ("0", "hint"), ("3", "hint")]
    assert prompts[0] == "What is 2 + 2? <hint> add two </hint>"  # a reasoning teacher's think block dropped
    assert all("<hint> " in p and p.endswith(" </hint>") for p in prompts)
    assert teacher.prompts[0].startswith("Read the solved response below") and "T2" in teacher.prompts[0]
    assert teacher.calls[0] == dict(max_new_tokens=512, temperature=0.0, top_p=1.0, top_k=0)  # greedy
    helped = [replace(g, rollouts=[Rollout("", [1], [2])] * 2, rewards=rs)
              for g, rs in zip(groups, ([1, 0], [0, 0], [1, 1]))]
    m = baseline_metrics("hint", helped)
    # question 0's hint holds \boxed{, question 3's the gold answer 5
    assert {k: m[k] for k in ("acc/hint", "count/hint", "count/hint_leak")} == \
        {"acc/hint": 0.5, "count/hint": 3, "count/hint_leak": 2}


def test_hint_drops_the_teachers_thinking_wherever_its_block_opened():
    """The hint is what follows the teacher's last </think>: with the opening tag at the start, after some
    text, or in the generation prompt (no opening tag in the reply); a reply without a closed block stays
    whole."""
    replies = ["<think>scratch</think> add two", "scratch 4</think>\nadd two", "Ok. <think>4</think> add two",
               "<think>a</think> b </think> add two", "add <think> two"]
    questions = [{"id": str(i), "question": f"Q{i}", "answer": "4"} for i in range(len(replies))]
    correct = {i: [Rollout(f"T{i}", [], [])] for i in range(len(replies))}
    plain = [Group(q, "plain", q["question"]) for q in questions]
    groups = hint_groups(plain, list(correct), correct, random.Random(0), ScriptedTeacher(replies), 512)
    prompts, hints = [g.text for g in groups], [g.hint for g in groups]
    assert hints == ["add two"] * 4 + ["add <think> two"]
    assert prompts[1] == "Q1 <hint> add two </hint>"


def test_hint_leaks_are_a_box_or_the_gold_answer_as_a_whole_number():
    assert (hint_leaks("write \\boxed{x}", "9") and hint_leaks("so it is 7.", "7")
            and hint_leaks("x = -3", "-3"))
    assert (not hint_leaks("add 17 and 2", "7") and not hint_leaks("about 7.5", "7")
            and not hint_leaks("no", "7"))


def test_hint_run_counts_a_leaking_hint(tiny_model, tiny_teacher, tmp_path, monkeypatch):
    """The whole loop: the teacher's hints all hold a box; each is counted as a leak (the paper does not
    filter them), and each hint reached the student inside <hint> tags."""
    real_generate, asked = TransformersEngine.generate, []

    def generate(self, prompts, *a, **kw):
        if prompts and prompts[0].startswith("Read the solved response"):  # the teacher writing hints
            return [[Rollout(text="put it in \\boxed{}", prompt_ids=[], token_ids=[])] for _ in prompts]
        asked.extend(prompts)
        return real_generate(self, prompts, *a, **kw)

    monkeypatch.setattr(TransformersEngine, "generate", generate)
    monkeypatch.setattr("reward.grade", parity_grade)
    out = tmp_path / "h"
    train.main(train.parse_config(args(tiny_model, tiny_teacher, "hint", out, "--steps", "2",
                                       "--dump-reformulated")))
    metrics = read_metrics(out)
    assert sum(m["count/hint"] for m in metrics) > 0
    assert all(m["count/hint_leak"] == m["count/hint"] for m in metrics)
    with open(out / "reformulated.jsonl") as f:
        dumped = [json.loads(line) for line in f]
    assert len(dumped) == sum(m["count/hint"] for m in metrics)
    for d in dumped:
        assert d["kind"] == "hint" and d["prompt"].endswith(" <hint> put it in \\boxed{} </hint>")
        assert with_closer(d["prompt"]) in asked and len(d["rollouts"]) == 2


# ---------------------------------------------------------------------------------------------------------
# Prefix


def test_engines_continue_a_response_prefix(tiny_model, monkeypatch):
    model, tok = load_model(tiny_model)
    prefix = tok("The answer is", add_special_tokens=False)["input_ids"]
    question = with_closer("What is 3 + 4?")
    chat = chat_prompt_ids(tok, question)
    for engine in (TransformersEngine(model, tok),):  # vLLM's: test_vllm_real.py (tests/vllm_sync.py)
        (group,) = engine.generate([question], n=2, max_new_tokens=5, temperature=1.0,
                                   response_prefixes=[prefix])
        for r in group:
            assert r.prompt_ids == chat + prefix and len(r.token_ids) == len(r.logprobs) > 0
            # what the reward grades
            assert r.text == tok.decode(prefix + r.token_ids, skip_special_tokens=True)
            # sampled after the prefix: the trainer's log-probs of Episode(prompt_ids, token_ids) are
            # the engine's
            with torch.no_grad():
                lp, _, _ = response_logprobs(model, [Episode(r.prompt_ids, r.token_ids)], 1.0,
                                             tok.pad_token_id)
            assert torch.allclose(lp[0], torch.tensor(r.logprobs), atol=1e-4)
    with pytest.raises(ValueError, match="response prefixes"):
        RemoteEngine("http://127.0.0.1:9", "m").generate(["q"], response_prefixes=[[1]])


def test_prefix_is_the_first_floor_alpha_l_of_the_teachers_own_tokens(tiny_model, tiny_vlm):
    """Alg. 6: p = (t_1 .. t_floor(alpha L)) of the teacher's L tokens: at alpha 0.4, L = 1..10 give
    0 0 1 1 2 2 2 3 3 4 tokens (round half up gave 2 at L = 4, 4 at L = 9). A teacher sharing the student's
    tokenizer gives its ids as they are, not decoded and re-tokenized (which merges these one-character
    tokens); the end-of-sequence token closing a rollout is not one of the L. A text without tokens (a worked
    solution) is cut in the student's tokens; a teacher with another vocabulary is cut in its own, then
    re-tokenized for the student."""
    from baselines import prefix_length

    _, tok = load_model(tiny_model)
    _, other = load_model(tiny_vlm)  # the same corpus with four more special tokens: other ids
    assert tok.get_vocab() != other.get_vocab()
    chars = list("What+is34?")
    ids = [tok.convert_tokens_to_ids(c) for c in chars]
    assert len(set(ids)) == 10 and tok.unk_token_id not in ids
    assert len(tok(tok.decode(ids), add_special_tokens=False)["input_ids"]) < 10  # re-tokenizing would merge
    want = [0, 0, 1, 1, 2, 2, 2, 3, 3, 4]
    for L, n in zip(range(1, 11), want):
        assert prefix_length(L, 0.4) == n
        for closed in (ids[:L] + [tok.eos_token_id], ids[:L]):  # stopped, or cut by the token limit
            assert prefix_ids(Rollout(tok.decode(ids[:L]), [], closed), tok, 0.4) == ids[:n]
        theirs = [other.convert_tokens_to_ids(c) for c in chars[:L]] + [other.eos_token_id]
        text = other.decode(theirs[:n], skip_special_tokens=True)
        assert prefix_ids(Rollout("unused", [], theirs), tok, 0.4, other) == \
            tok(text, add_special_tokens=False)["input_ids"]
    solution = "3 + 4 = 7, so the answer is \\boxed{7}"
    text_ids = tok(solution, add_special_tokens=False)["input_ids"]
    assert prefix_ids(Rollout(solution, [], []), tok, 0.4) == text_ids[:math.floor(0.4 * len(text_ids))]
    # 0.29 * 100 is 28.999... in floats
    assert prefix_length(100, 0.29) == 29 and prefix_length(10, 1.0) == 10


def test_prefix_run_cuts_the_model_teachers_own_token_ids(tiny_model, tiny_teacher, tmp_path, monkeypatch):
    """train.py hands Prefix the correct teacher rollouts themselves: with a model teacher that shares the
    student's tokenizer, every prefix is the first floor(0.4 L) of the picked rollout's own token ids."""
    import baselines

    calls, real = [], baselines.prefix_ids
    monkeypatch.setattr(baselines, "prefix_ids",
                        lambda r, *a: calls.append((r, a, real(r, *a))) or calls[-1][2])
    monkeypatch.setattr("reward.grade", lambda text, gold: 1.0 if len(text) % 2 else 0.0)
    # two steps and 4 teacher rollouts per hard question: a step without a correct one has no prefix to cut
    train.main(train.parse_config(args(tiny_model, tiny_teacher, "prefix", tmp_path / "p", "--steps", "2",
                                       "--teacher-group-size", "4")))
    assert calls
    for rollout, (tok, frac, teacher_tokenizer), prefix in calls:
        body = rollout.token_ids[:-1] if rollout.finish_reason == "stop" else rollout.token_ids
        assert teacher_tokenizer is None and body and prefix == body[:math.floor(0.4 * len(body))]


class GradCapture:
    """Stands in for the optimizer in ppo_update: keeps the gradient it would have stepped on."""

    def __init__(self, model):
        self.model, self.grads = model, None

    def step(self):
        self.grads = {n: p.grad.clone() for n, p in self.model.named_parameters()}

    def zero_grad(self, set_to_none=True):
        self.model.zero_grad(set_to_none=set_to_none)


def test_prefix_tokens_carry_no_loss_and_no_token_count(tiny_model):
    """A Prefix episode as train.py builds it (the prefix at the end of prompt_ids) through the real update:
    its gradient is that of the token mean over the continuation only. Training on the prefix (its tokens in
    the loss, or only in the count) would give another gradient, and the test checks that it would."""
    from accelerate import Accelerator

    model, tok = load_model(tiny_model, dtype=torch.float64)
    chat = chat_prompt_ids(tok, with_closer("What is 3 + 4?"))
    prefix = tok("The answer is", add_special_tokens=False)["input_ids"]
    cont = tok(" \\boxed{7}", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    k, n = len(prefix), len(cont)
    ep = Episode(chat + prefix, cont, reward=1.0, group="q/prefix", kind="prefix", adv=1.25)
    with torch.no_grad():  # a ratio of about 1.05 (inside the clip); fp32 values, as ppo_update holds them
        old_lp = (response_logprobs(model, [ep], 1.0, tok.pad_token_id)[0][0] - 0.05).float().tolist()
    capture = GradCapture(model)
    plan = plan_minibatches([ep], 1, random.Random(0))
    ppo_update(model, capture, Accelerator(cpu=True), [ep], plan, {0: old_lp}, 1.0, 4, tok.pad_token_id,
               grad_clip=1e9)

    # the same tokens with the prefix as response: per-position log-probs of the whole assistant turn
    whole = Episode(chat, prefix + cont)
    lp, mask, _ = response_logprobs(model, [whole], 1.0, tok.pad_token_id)  # (1, k + n)
    old = torch.cat([lp.detach()[:, :k], torch.tensor([old_lp], dtype=lp.dtype)], dim=1)
    adv = torch.tensor([1.25], dtype=lp.dtype)

    def grads(token_mask):
        lp.retain_grad()
        model.zero_grad()
        loss, _ = policy_loss(lp, old, adv, token_mask)
        loss.backward(retain_graph=True)
        return {name: p.grad.clone() for name, p in model.named_parameters()}, lp.grad.clone()

    continuation_only = mask.clone()
    continuation_only[:, :k] = 0
    want, d_lp = grads(continuation_only)
    # the prefix positions' log-probs: no gradient
    assert (d_lp[:, :k] == 0).all() and (d_lp[:, k:] != 0).all()
    assert all(torch.allclose(capture.grads[name], g, atol=1e-12) for name, g in want.items())
    trained_on_prefix, _ = grads(mask)  # all k + n tokens in the loss and in the count
    assert not all(torch.allclose(capture.grads[name], g, atol=1e-6) for name, g in trained_on_prefix.items())
    counted_only = {name: g * n / (k + n) for name, g in want.items()}  # prefix in the count, not in the loss
    assert not all(torch.allclose(capture.grads[name], g, atol=1e-6) for name, g in counted_only.items())


def test_prefix_run_continues_gold_solutions_and_grades_the_whole_turn(tiny_model, tmp_path, monkeypatch):
    """--teacher gold: the worked solution is the teacher's correct rollout; its first 40% (student tokens)
    ends every Prefix episode's prompt, and the reward sees prefix + continuation."""
    graded, updated, real_update = [], [], train.ppo_update
    monkeypatch.setattr("reward.grade", lambda text, gold: graded.append(text) or float("\\boxed{" in text))
    monkeypatch.setattr(train, "ppo_update", lambda model, opt, acc, seqs, *a: updated.extend(seqs) or
                        real_update(model, opt, acc, seqs, *a))
    out = tmp_path / "p"
    train.main(train.parse_config(args(tiny_model, "gold", "prefix", out, "--steps", "1")))
    (m,) = read_metrics(out)
    _, tok = load_model(tiny_model)
    from data import load_examples
    solutions = {e["question"]: e["solution"] for e in load_examples("arithmetic", limit=16, seed=0)}
    prefix_eps = [s for s in updated if s.kind == "prefix"]
    assert m["count/prefix"] == 2 and len(prefix_eps) == 2 * 2  # round(0.5 * 4) kept questions, G_S = 2 each
    for s in prefix_eps:
        question = next(q for q in solutions if s.prompt_ids[:len(chat_prompt_ids(tok, with_closer(q)))]
                        == chat_prompt_ids(tok, with_closer(q)))
        prefix = prefix_ids(Rollout(solutions[question], [], []), tok, 0.4)
        assert s.prompt_ids == chat_prompt_ids(tok, with_closer(question)) + prefix and len(prefix) > 3
        text = tok.decode(prefix + s.token_ids, skip_special_tokens=True)
        assert text in graded  # graded as the whole assistant turn
    assert m["len/prefix"] > 3 and m["count/no_teacher_correct"] == 0


# ---------------------------------------------------------------------------------------------------------
# Off-Distill


def test_off_distill_targets_are_the_correct_teacher_rollouts_only():
    questions = [{"id": "a", "question": "qa", "answer": "1"}, {"id": "b", "question": "qb", "answer": "2"}]
    plain = [Group(q, "plain", q["question"], rollouts=rs) for q, rs in
             zip(questions, [[Rollout("", [1, 2], [3])], [Rollout("", [4, 5, 6], [7])]])]
    teacher = ScriptedTeacher(["\\boxed{1}", "\\boxed{9}", "\\boxed{3}", "\\boxed{4}"])
    targets, counts = off_distill_targets(plain, teacher, n=2, max_new_tokens=5)
    assert teacher.prompts == [with_closer("qa"), with_closer("qb")]
    # question a: one of two teacher rollouts is right; question b: none, so it adds nothing
    assert [(t.prompt_ids, t.token_ids, t.group) for t in targets] == [([1, 2], [7, 8], "a/teacher")]
    assert counts == {"count/off_distill": 1, "count/no_teacher_correct": 1, "acc/teacher": 0.25}


def test_off_distill_on_image_data_shows_both_models_the_image(tiny_vlm, images, tmp_path, monkeypatch):
    """pi_T(.|x) with x = image + text: the teacher samples from the image prompt, each target Episode carries
    the student's image inputs with its image-token prompt, and both forwards of the JSD receive those pixels
    (without them the same tokens give another loss: the image tokens would be read as text)."""
    from accelerate import Accelerator

    from reformulate import user_prompt

    teacher_path = build_random_model(str(tmp_path / "vlm_teacher"), SHAPE_TINY, seed=1, vision=VISION_TINY)
    model, tok = load_model(tiny_vlm)
    teacher_model, teacher_tok = load_model(teacher_path)
    assert tok.get_vocab() == teacher_tok.get_vocab()
    questions = [{"id": "a", "question": "What is 3 + 4?", "answer": "7", "images": [images[0]]},
                 {"id": "b", "question": "What is 1 + 1?", "answer": "2"},
                 {"id": "c", "question": "What is 2 + 2?", "answer": "4", "images": [images[1], images[2]]}]
    prompts = [user_prompt(ex, with_closer(ex["question"])) for ex in questions]
    torch.manual_seed(0)
    plain = TransformersEngine(model, tok).generate(prompts, n=1, max_new_tokens=3)
    teacher = TransformersEngine(teacher_model.eval(), teacher_tok)
    asked, real_generate = [], teacher.generate
    teacher.generate = lambda ps, **kw: asked.extend(ps) or real_generate(ps, **kw)
    monkeypatch.setattr("reward.grade", lambda text, gold: 1.0)
    targets, counts = off_distill_targets([Group(q, "plain", q["question"], rollouts=rs) for q, rs in
                                           zip(questions, plain)], teacher, n=2, max_new_tokens=4)
    assert asked == prompts and asked[0]["images"] == [images[0]]  # the teacher saw the image
    assert counts["count/off_distill"] == 6 and [t.group for t in targets] == ["a/teacher"] * 2 \
        + ["b/teacher"] * 2 + ["c/teacher"] * 2
    pad = tok.convert_tokens_to_ids("<|image_pad|>")
    for t, group in zip(targets, [plain[0], plain[0], plain[1], plain[1], plain[2], plain[2]]):
        assert t.prompt_ids == group[0].prompt_ids and t.vision is group[0].vision
    assert targets[2].vision is None and all(t.vision is not None for t in targets[:2] + targets[4:])
    image_tokens = int(targets[0].vision["image_grid_thw"].prod(-1).sum()) // 4  # merge size 2 x 2
    assert targets[0].prompt_ids.count(pad) == image_tokens > 0

    fed = []  # the pixel rows each forward got
    hooks = [m.register_forward_pre_hook(lambda mod, a, kw, name=name: fed.append(
        (name, kw["pixel_values"].shape[0] if kw.get("pixel_values") is not None else 0)), with_kwargs=True)
        for name, m in (("student", model), ("teacher", teacher_model))]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    try:
        metrics = jsd_update(model, teacher_model, optimizer, Accelerator(cpu=True), targets, 1.0, 8,
                             tok.pad_token_id, 0.5, 1.0)
    finally:
        for h in hooks:
            h.remove()
    rows = sum(int(t.vision["pixel_values"].shape[0]) for t in targets if t.vision is not None)
    # one micro-batch, every image in both forwards
    assert sorted(fed) == [("student", rows), ("teacher", rows)]
    with torch.no_grad():
        blind = [Episode(t.prompt_ids, t.token_ids, group=t.group) for t in targets]
        seen = response_jsd(model, teacher_model, targets, 1.0, tok.pad_token_id)[0]
        unseen = response_jsd(model, teacher_model, blind, 1.0, tok.pad_token_id)[0]
    assert not torch.allclose(seen[:2], unseen[:2]) and torch.allclose(seen[2:4], unseen[2:4])
    assert metrics["count/distill_tokens"] == sum(len(t.token_ids) for t in targets)


def test_off_distill_loss_is_the_mean_over_questions_of_each_ones_target_average(tiny_model, tiny_teacher):
    """Alg. 2 l.10 on two questions, one with 1 correct teacher target and one with 4 of other lengths: the
    loss is (J_a + (J_b1 + J_b2 + J_b3 + J_b4) / 4) / 2, J_y the mean of target y's per-token JSD (computed
    here target by target, without padding), and jsd_update steps on its gradient. --off-distill-mean token is
    the former token mean over all 20 target tokens, another value here (question b's 14 tokens weigh 14/20,
    not 1/2)."""
    from accelerate import Accelerator

    from baselines import off_distill_weights

    model, tok = load_model(tiny_model, dtype=torch.float64)
    teacher, _ = load_model(tiny_teacher, dtype=torch.float64)
    words = tok("The answer is \\boxed{7} and 3 + 4 = 7 so it is 7", add_special_tokens=False)["input_ids"]
    assert len(words) >= 11
    prompt_a, prompt_b = (chat_prompt_ids(tok, with_closer(q)) for q in ("What is 3 + 4?", "What is 1 + 1?"))
    targets = [Episode(prompt_a, words[:6], group="a/teacher")] + [
        Episode(prompt_b, words[k:k + n], group="b/teacher") for k, n in ((0, 1), (1, 3), (2, 8), (3, 2))]
    assert off_distill_weights(targets) == [1 / (2 * 1 * 6), 1 / (2 * 4 * 1), 1 / (2 * 4 * 3),
                                            1 / (2 * 4 * 8), 1 / (2 * 4 * 2)]
    per = [response_jsd(model, teacher, [t], 1.0, tok.pad_token_id)[0][0].mean() for t in targets]  # J_y
    want = (per[0] + sum(per[1:]) / 4) / 2
    lengths = [len(t.token_ids) for t in targets]
    token_mean = sum(j * n for j, n in zip(per, lengths)) / sum(lengths)
    # random tiny models give near-uniform JSDs (~0.0078 a token): the two means differ by ~0.2%,
    # far beyond fp64
    assert sum(lengths) == 20 and abs(want.item() - token_mean.item()) > 1e-3 * want.item()
    model.zero_grad()
    want.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)

    capture = GradCapture(model)
    # micro-batches of 1, so no padding: batched linear attention over left padding moves fp64
    # gradients by ~1e-6
    m = jsd_update(model, teacher, capture, Accelerator(cpu=True), targets, 1.0, 1, tok.pad_token_id, 0.5,
                   1e9, off_distill_weights(targets))
    assert m["train/loss"] == pytest.approx(want.item(), rel=1e-12)
    # the diagnostic token mean, as before
    assert m["train/jsd"] == pytest.approx(token_mean.item(), rel=1e-12)
    assert all(torch.allclose(capture.grads[name], g, rtol=1e-9, atol=1e-15) for name, g in grads.items())
    token = jsd_update(model, teacher, capture, Accelerator(cpu=True), targets, 1.0, 1, tok.pad_token_id, 0.5,
                       1e9, off_distill_weights(targets, "token"))
    assert token["train/loss"] == pytest.approx(token_mean.item(), rel=1e-12) == token["train/jsd"]
    assert not all(torch.allclose(capture.grads[name], g, rtol=1e-9, atol=1e-15) for name, g in grads.items())
    assert train.parse_config(["--teacher", "T", "--algo", "off_distill"]).off_distill_mean == "question"


def count_optimizer_steps():
    steps = []
    handle = register_optimizer_step_post_hook(lambda opt, a, kw: steps.append(1))
    return steps, handle


def test_off_distill_takes_one_optimizer_step_per_rollout_step(tiny_model, tiny_teacher, tmp_path,
                                                                monkeypatch):
    monkeypatch.setattr("reward.grade", parity_grade)
    steps, handle = count_optimizer_steps()
    try:
        train.main(train.parse_config(args(tiny_model, tiny_teacher, "off_distill", tmp_path / "o",
                                           "--steps", "2", "--iters-per-step", "4",
                                           "--micro-batch-size", "1")))
    finally:
        handle.remove()
    metrics = read_metrics(tmp_path / "o")
    assert len(steps) == 2  # not --iters-per-step 4, not one per micro-batch
    assert all(m["count/off_distill"] > 0 and m["train/jsd"] > 0 for m in metrics)


def test_off_distill_without_a_correct_teacher_rollout_does_not_step(tiny_model, tiny_teacher, tmp_path,
                                                                     monkeypatch):
    monkeypatch.setattr("reward.grade", lambda text, gold: 0.0)
    steps, handle = count_optimizer_steps()
    try:
        train.main(train.parse_config(args(tiny_model, tiny_teacher, "off_distill", tmp_path / "z",
                                           "--steps", "1")))
    finally:
        handle.remove()
    (m,) = read_metrics(tmp_path / "z")
    assert steps == [] and m["count/off_distill"] == 0 and m["count/no_teacher_correct"] == 4
    assert m["train/jsd"] is None
    w0 = load_file(os.path.join(tiny_model, "model.safetensors"))
    w1 = load_file(str(tmp_path / "z" / "checkpoints" / "step_000001" / "model.safetensors"))
    assert all(torch.equal(w0[k], w1[k]) for k in w0)  # no loss, no step: AdamW's decay did not move them


# ---------------------------------------------------------------------------------------------------------
# every --algo: 2 steps, and 1 step + resume, give the same weights and metrics


@pytest.mark.parametrize("algo", ["zppo", "grpo", "hint", "prefix", "off_distill", "on_distill"])
def test_every_algo_trains_and_resumes_exactly(algo, tiny_model, tiny_teacher, tmp_path, monkeypatch):
    monkeypatch.setattr("reward.grade", parity_grade)  # mixed groups, and some teacher rollouts are right
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train.main(train.parse_config(args(tiny_model, tiny_teacher, algo, straight, "--steps", "2")))
    train.main(train.parse_config(args(tiny_model, tiny_teacher, algo, resumed, "--steps", "1")))
    train.main(train.parse_config(args(tiny_model, tiny_teacher, algo, resumed, "--steps", "2", "--resume",
                                       str(resumed))))
    a, b = (load_file(str(d / "checkpoints" / "step_000002" / "model.safetensors"))
            for d in (straight, resumed))
    w0 = load_file(os.path.join(tiny_model, "model.safetensors"))
    assert any(not torch.equal(a[k], w0[k]) for k in w0)  # the run trained
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    ma, mb = read_metrics(straight), read_metrics(resumed)
    assert [m["step"] for m in ma] == [m["step"] for m in mb] == [1, 2]
    keys = {"zppo": "count/bcq", "grpo": "count/questions", "hint": "count/hint", "prefix": "count/prefix",
            "off_distill": "count/off_distill", "on_distill": "count/distill_tokens"}
    loss = "train/jsd" if algo.endswith("distill") else "train/loss"
    for key in ("acc/plain", "buffer/size", loss, keys[algo]):
        assert ma[1][key] == pytest.approx(mb[1][key], abs=1e-6), key
    if algo in ("hint", "prefix"):
        assert sum(m[keys[algo]] for m in ma) > 0  # the baseline's own group really ran
