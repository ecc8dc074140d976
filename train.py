"""ZPPO training: RL post-training of a small student where a teacher helps only inside prompts.

    accelerate launch train.py --student Qwen3.5-0.8B --teacher Qwen3.5-27B   # GPU
    python demo.py                                                            # CPU, offline, ~15 min

One rollout step (numbers are the steps of ZPPO.md, the spec of the method):
 1. plain rollouts on new + replayed questions, binary reward
 2. hard questions: plain accuracy < tau
 4. pre-cap: hardest first, at most rho_aug * N_new
 3. teacher rollouts on those, keep the correct ones
 6. post-cap: BCQ (needs a correct teacher rollout) then NCQ per question, at most rho_aug * N_new
 5. build the BCQ / NCQ prompts from (compressed) candidates
 7. student rollouts on them, scored against the original gold answer
 8-9. plain, BCQ and NCQ of one question are three groups; REINFORCE++ advantages over the step
 10. I mini-batch updates of the PPO clip-higher / dual-clip loss, token-level mean, no KL
 11. buffer update from plain rollouts only
Every gradient token was sampled by the student: the teacher's text is only ever part of a prompt.
"""
import importlib.util
import json
import math
import os
import random
import time
import warnings
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Literal, Optional

import torch
from accelerate import Accelerator
from tqdm import tqdm
from transformers import AutoTokenizer, HfArgumentParser

from buffer import ReplayBuffer
from checkpoint import atomic_write, find_checkpoint, load_checkpoint, save_checkpoint
from data import load_examples, take
from eval import run_benchmarks, score_responses
from reformulate import (bcq_prompt, compression_prompt, dedup, extract_summary, ncq_prompt, pick_bcq_pair,
                         postcap, precap, with_closer)
from reward import grade, last_boxed
from rollout import (RemoteEngine, ShardedEngine, TransformersEngine, VLLMEngine, frozen_engine, load_model,
                     resolve_model_name)
from zppo import compute_advantages, old_logprobs, plan_minibatches, ppo_update, reduce_sum


def arg(default, help):
    return field(default=default, metadata={"help": help})


@dataclass
class Config:
    # models
    student: str = arg("Qwen3.5-0.8B", "student: a local path, a hub id, a bare Qwen name (-> Qwen/NAME) or a .gguf file")
    teacher: Optional[str] = arg(None, "teacher model (path or name), 'gold' to use the data set's solutions, or none")
    teacher_url: Optional[str] = arg(None, "OpenAI-compatible server serving --teacher (e.g. http://host:8000)")
    teacher_timeout: float = arg(600.0, "seconds per teacher request (remote teacher)")
    teacher_retries: int = arg(3, "retries per teacher request after an error or timeout (remote teacher)")
    teacher_concurrency: int = arg(32, "teacher requests in flight (remote teacher)")
    teacher_engine: Literal["auto", "transformers", "vllm"] = arg("auto", "in-process teacher: auto = as --engine")
    teacher_gpu_memory_utilization: float = arg(0.4, "share of the GPU an in-process vLLM teacher may take")
    # data
    data: str = arg("openai/gsm8k", "'arithmetic' (generated), a .jsonl file, or a hub data set")
    data_config: Optional[str] = arg(None, "hub data set config name (openai/gsm8k: main)")
    data_limit: Optional[int] = arg(None, "use at most this many questions")
    # ZPPO (paper's Table 8)
    algo: Literal["zppo", "grpo"] = arg("zppo", "'grpo' is ZPPO with --no-buffer --no-bcq --no-ncq")
    buffer: bool = arg(True, "replay hard questions until they graduate")
    bcq: bool = arg(True, "binary-choice questions (teacher answer vs. student wrong answer)")
    ncq: bool = arg(True, "negative-candidate questions (the student's wrong answers, marked WRONG)")
    compress: bool = arg(True, "teacher compresses every candidate (a gold teacher never does)")
    adv_norm: Literal["without_zero", "with_zero", "none"] = arg("without_zero", "advantage step-2 normalisation")
    questions_per_step: int = arg(384, "N_new: new questions per rollout step")
    group_size: int = arg(8, "G_S: student rollouts per prompt")
    teacher_group_size: int = arg(4, "G_T: teacher rollouts per hard question")
    tau: float = arg(0.5, "hardness threshold on plain accuracy")
    rho_replay: float = arg(0.25, "replayed questions per step, as a fraction of N_new")
    rho_aug: float = arg(0.25, "cap on hard questions and on BCQ+NCQ instances, as a fraction of N_new")
    buffer_capacity: int = arg(10_000, "replay buffer capacity (FIFO eviction)")
    iters_per_step: int = arg(4, "I: optimizer steps (mini-batches) per rollout step")
    clip_low: float = arg(0.2, "PPO ratio clip below 1")
    clip_high: float = arg(0.28, "PPO ratio clip above 1 (clip-higher)")
    dual_clip: float = arg(10.0, "dual-clip ratio for negative advantages")
    candidate_max_chars: Optional[int] = arg(None, "truncate uncompressed candidates to this many characters")
    # sampling
    temperature: float = arg(1.0, "student and teacher sampling temperature")
    top_p: float = arg(1.0, "nucleus sampling")
    top_k: int = arg(0, "0 disables top-k")
    max_prompt_tokens: int = arg(4096, "questions whose plain prompt is longer are dropped")
    max_new_tokens: int = arg(12_288, "student response cap")
    teacher_max_new_tokens: int = arg(12_288, "teacher response cap")
    compress_max_new_tokens: int = arg(512, "compressed candidate cap")
    compress_temperature: float = arg(0.0, "compression sampling temperature (0 = greedy) [our default]")
    gen_batch_size: int = arg(64, "sequences per generate call (transformers engine)")
    engine: Literal["auto", "transformers", "vllm"] = arg("auto", "student rollouts: auto = vllm on GPU when installed")
    vllm_gpu_memory_utilization: float = arg(0.3, "share of the GPU the colocated vLLM engine may take")
    vllm_sleep: bool = arg(False, "release vLLM's memory between generations (one tight GPU)")
    vllm_max_model_len: Optional[int] = arg(None, "vLLM context length (default: the model's)")
    sync_warn: float = arg(0.1, "warn when engine and trainer log-probs differ by more (mean |diff| per token)")
    # optimisation
    lr: float = arg(1e-6, "AdamW learning rate (constant, no warmup)")
    weight_decay: float = arg(0.1, "AdamW weight decay")
    grad_clip: float = arg(1.0, "gradient-norm clip")
    micro_batch_size: int = arg(8, "sequences per forward/backward (gradient accumulation inside a mini-batch)")
    skip_zero_adv: bool = arg(True, "skip the forward/backward of A = 0 sequences (same gradient, less compute)")
    mixed_precision: Optional[Literal["no", "bf16", "fp16"]] = arg(None, "autocast for the update; default: accelerate's config")
    # run
    steps: int = arg(200, "rollout steps")
    seed: int = arg(0, "seed for data order, buffer sampling, tie-breaks and sampling")
    out_dir: str = arg("runs/zppo", "metrics.jsonl, config.json and checkpoints/ go here")
    save_every: int = arg(10, "checkpoint every N steps (and at the end); 0 = only at the end")
    keep_checkpoints: int = arg(2, "most recent checkpoints kept")
    resume: Optional[str] = arg(None, "continue a run: its out_dir or one of its checkpoints")
    report_to: str = arg("none", "accelerate trackers: none, all, tensorboard, wandb, ...")
    dump_reformulated: bool = arg(False, "write every BCQ/NCQ prompt with its rollouts to reformulated.jsonl")
    dump_rollouts: bool = arg(False, "write every rollout's group, reward, advantage and length to rollouts.jsonl")
    # evaluation (eval.py's protocol; free-form answers are judged by the teacher model)
    eval_benchmarks: Optional[str] = arg(None, "comma-separated eval.py benchmarks, run every --eval-every steps and at the end")
    eval_every: int = arg(0, "0 = only at the end (when --eval-benchmarks is set)")
    eval_samples: int = arg(1, "k samples per question (avg@k)")
    eval_max_new_tokens: int = arg(12_288, "eval response cap")
    eval_limit: Optional[int] = arg(None, "first N questions of each benchmark")
    eval_data_dir: Optional[str] = arg(None, "folder of NAME.jsonl benchmark files, tried before the hub")


def parse_config(argv=None):
    parser = HfArgumentParser(Config)
    # presets become parser defaults, so any flag given explicitly still wins
    known, _ = parser.parse_known_args(argv)
    if known.algo == "grpo":
        parser.set_defaults(buffer=False, bcq=False, ncq=False)
    (cfg,) = parser.parse_args_into_dataclasses(args=argv)
    if cfg.data == "openai/gsm8k" and cfg.data_config is None:
        cfg.data_config = "main"
    return cfg


def round_half_up(x):
    return int(math.floor(x + 0.5))


def mean(xs):
    xs = list(xs)
    return sum(xs) / len(xs) if xs else 0.0


def sync_check(seqs, threshold, step, accelerator):
    """Mean |engine log-prob - trainer log-prob| over the tokens of this step's gradient sequences.
    Both are the sampling policy's, so the gap is numerical noise unless the engine samples from stale
    or wrong weights: a silent weight-sync failure shows up here first."""
    diffs = [abs(a - b) for s in seqs if s["mine"] and len(s["engine_logprobs"]) == len(s["token_ids"])
             for a, b in zip(s["engine_logprobs"], s["old_logprobs"])]
    total, count = reduce_sum(accelerator, [sum(diffs), len(diffs)])
    gap = total / count if count else None
    if gap is not None and gap > threshold:
        warnings.warn(f"step {step}: engine and trainer log-probs differ by {gap:.3f} per token (> {threshold}); "
                      "is the engine sampling from the current weights?")
    return gap


# ---------------------------------------------------------------------------------------------------------
# the teacher: reached only through prompts


def score_groups(groups, examples, judge):
    """The binary reward of every rollout: rule grader, or the judge (the teacher) for free-form gold answers."""
    flat = iter(score_responses([(ex, r.text) for g, ex in zip(groups, examples) for r in g], judge, grade))
    return [[next(flat) for _ in g] for g in groups]


def teacher_correct_rollouts(examples, teacher, cfg):
    """Spec step 3: G_T teacher rollouts per question on the plain prompt, correct ones kept.
    With --teacher gold the data set's worked solution stands in for the teacher's rollouts."""
    if cfg.teacher == "gold":
        texts = [[ex["solution"]] if ex.get("solution") else [] for ex in examples]
    elif teacher is not None and examples:
        groups = teacher.generate([with_closer(ex["question"]) for ex in examples], n=cfg.teacher_group_size,
                                  max_new_tokens=cfg.teacher_max_new_tokens, temperature=cfg.temperature,
                                  top_p=cfg.top_p, top_k=cfg.top_k)
        texts = [[r.text for r in g] for g in groups]
    else:
        texts = [[] for _ in examples]
    scores = iter(score_responses([(ex, t) for ts, ex in zip(texts, examples) for t in ts], teacher, grade))
    return [[t for t in ts if next(scores)] for ts in texts]


def compress_candidates(texts, teacher, cfg):
    """Candidate compression: the teacher rewrites every candidate into a short trace, so length and
    style do not tell which BCQ candidate is the teacher's. Returns {original: rewritten}."""
    unique = list(dict.fromkeys(texts))
    if cfg.compress and teacher is not None and cfg.teacher != "gold" and unique:
        outs = teacher.generate([compression_prompt(t) for t in unique], n=1, max_new_tokens=cfg.compress_max_new_tokens,
                                temperature=cfg.compress_temperature, top_p=cfg.top_p, top_k=cfg.top_k)
        # a failed remote compression leaves that candidate as written (truncated if asked)
        return {t: extract_summary(o[0].text) if o else t[:cfg.candidate_max_chars] for t, o in zip(unique, outs)}
    return {t: t[:cfg.candidate_max_chars] for t in unique}  # [:None] keeps all


def main(cfg):
    accelerator = Accelerator(log_with=None if cfg.report_to == "none" else cfg.report_to, project_dir=cfg.out_dir,
                              mixed_precision=cfg.mixed_precision)
    rng = random.Random(cfg.seed)
    torch.manual_seed(cfg.seed)
    os.makedirs(cfg.out_dir, exist_ok=True)

    ckpt = find_checkpoint(cfg.resume) if cfg.resume else None
    model, tokenizer = load_model(ckpt or cfg.student)
    model.to(accelerator.device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8,
                                  weight_decay=cfg.weight_decay)
    model, optimizer = accelerator.prepare(model, optimizer)
    if cfg.engine == "auto":
        cfg.engine = "vllm" if accelerator.device.type == "cuda" and importlib.util.find_spec("vllm") else "transformers"
    if cfg.engine == "vllm":
        student = VLLMEngine(resolve_model_name(ckpt or cfg.student), tokenizer, cfg.vllm_gpu_memory_utilization,
                             cfg.vllm_max_model_len, seed=cfg.seed + accelerator.process_index, sleep=cfg.vllm_sleep)
    else:
        student = TransformersEngine(accelerator.unwrap_model(model), tokenizer, max_batch_size=cfg.gen_batch_size)
    teacher = None
    if cfg.teacher_url:
        teacher = RemoteEngine(cfg.teacher_url, resolve_model_name(cfg.teacher or "default"), cfg.teacher_timeout,
                               cfg.teacher_retries, cfg.teacher_concurrency)
    elif cfg.teacher not in (None, "gold"):
        if (cfg.engine if cfg.teacher_engine == "auto" else cfg.teacher_engine) == "vllm":  # frozen: never synced
            t_tok = AutoTokenizer.from_pretrained(resolve_model_name(cfg.teacher))
            teacher = VLLMEngine(resolve_model_name(cfg.teacher), t_tok, cfg.teacher_gpu_memory_utilization,
                                 seed=cfg.seed + accelerator.process_index)
        else:
            teacher = frozen_engine(cfg.teacher, accelerator.device, cfg.gen_batch_size)
    if accelerator.num_processes > 1:  # every rank generates its share of the prompts and sees all results
        student = ShardedEngine(student, accelerator)
        teacher = ShardedEngine(teacher, accelerator) if teacher is not None else None
    sample = dict(temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k)

    examples = load_examples(cfg.data, limit=cfg.data_limit, seed=cfg.seed, config=cfg.data_config)
    fits = [len(ids) <= cfg.max_prompt_tokens for ids in tokenizer([with_closer(e["question"]) for e in examples])["input_ids"]]
    if not all(fits):
        print(f"dropping {fits.count(False)} questions whose plain prompt exceeds {cfg.max_prompt_tokens} tokens")
        examples = [e for e, ok in zip(examples, fits) if ok]
    buffer = ReplayBuffer(cfg.buffer_capacity)
    start, data_pos = 0, (0, 0)
    if ckpt:
        start, data_pos = load_checkpoint(ckpt, optimizer, rng, buffer)
        print(f"resumed from {ckpt} at step {start}")

    log_path = os.path.join(cfg.out_dir, "metrics.jsonl")
    if accelerator.is_main_process:
        with open(os.path.join(cfg.out_dir, "config.json"), "w") as f:
            json.dump(asdict(cfg), f, indent=2)
        if os.path.exists(log_path):  # a resumed run rewrites the steps after its checkpoint
            with open(log_path) as f:
                kept = [line for line in f if line.strip() and json.loads(line)["step"] <= start]
            atomic_write(log_path, "".join(kept))
    if cfg.report_to != "none":
        accelerator.init_trackers("zppo", config=asdict(cfg))
    dump = open(os.path.join(cfg.out_dir, "reformulated.jsonl"), "a") if cfg.dump_reformulated and accelerator.is_main_process else None
    n_new = cfg.questions_per_step
    cap = round_half_up(cfg.rho_aug * n_new)
    pad_id = tokenizer.pad_token_id
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="zppo", disable=not accelerator.is_main_process)
    for step in bar:
        t_step, timer, m = time.time(), defaultdict(float), {}
        teacher_failures = getattr(teacher, "failures", 0)

        # 1. plain rollouts on new questions + replayed hard ones
        new, *pos = take(examples, n_new, cfg.seed, *data_pos)
        data_pos = tuple(pos)
        new_ids = {ex["id"] for ex in new}
        replay = []
        if cfg.buffer:
            replay = buffer.sample(round_half_up(cfg.rho_replay * n_new), rng, exclude=new_ids)
        questions = new + replay
        t = time.time()
        plain = student.generate([with_closer(ex["question"]) for ex in questions], n=cfg.group_size,
                                 max_new_tokens=cfg.max_new_tokens, **sample)
        timer["rollout"] += time.time() - t
        t = time.time()
        plain_rewards = score_groups(plain, questions, teacher)
        timer["score"] += time.time() - t
        acc = [sum(rs) / len(rs) for rs in plain_rewards]

        # 2. hard questions; 4. pre-cap hardest first
        hard = [i for i, a in enumerate(acc) if a < cfg.tau]
        kept = precap(acc, hard, cap, rng) if (cfg.bcq or cfg.ncq) else []

        # 3. teacher rollouts on the kept hard questions, only the correct ones kept (never cached)
        t = time.time()
        correct = teacher_correct_rollouts([questions[i] for i in kept], teacher, cfg) if cfg.bcq else [[] for _ in kept]
        teacher_ok = {i: bool(c) for i, c in zip(kept, correct)}
        teacher_correct = dict(zip(kept, correct))
        timer["teacher"] += time.time() - t

        # 6. post-cap: BCQ then NCQ per question, hardest first
        chosen = postcap(kept, teacher_ok, cap, cfg.bcq, cfg.ncq)

        # 5. candidates (BCQ: one correct teacher + one wrong student rollout, shuffled; NCQ: all wrong ones)
        wrong = {i: [r.text for r, x in zip(plain[i], plain_rewards[i]) if x == 0] for i, _ in chosen}
        raw = [pick_bcq_pair(teacher_correct[i], wrong[i], rng) if kind == "bcq" else wrong[i] for i, kind in chosen]
        t = time.time()
        short = compress_candidates([c for cands in raw for c in cands], teacher, cfg)
        timer["compress"] += time.time() - t
        prompts = []
        for (i, kind), cands in zip(chosen, raw):
            q, cands = questions[i]["question"], [short[c] for c in cands]
            if kind == "bcq":
                prompts.append(bcq_prompt(q, cands))
            else:
                prompts.append(ncq_prompt(q, dedup(last_boxed(w) for w in wrong[i]), cands))

        # 7. student rollouts on the reformulated prompts, scored against the original gold answer
        t = time.time()
        reform = student.generate([with_closer(p) for p in prompts], n=cfg.group_size,
                                  max_new_tokens=cfg.max_new_tokens, **sample) if prompts else []
        timer["rollout"] += time.time() - t
        t = time.time()
        reform_rewards = score_groups(reform, [questions[i] for i, _ in chosen], teacher)
        timer["score"] += time.time() - t

        # 8. three separate groups per question; 9. advantages over the whole step batch
        seqs = []
        for groups, rewards, tags in ((plain, plain_rewards, [(i, "plain") for i in range(len(questions))]),
                                      (reform, reform_rewards, chosen)):
            for g, rs, (i, kind) in zip(groups, rewards, tags):
                seqs += [{"prompt_ids": r.prompt_ids, "token_ids": r.token_ids, "reward": x, "kind": kind,
                          "group": f"{questions[i]['id']}/{kind}", "engine_logprobs": r.logprobs} for r, x in zip(g, rs)]
        adv = compute_advantages([s["reward"] for s in seqs], [s["group"] for s in seqs], norm=cfg.adv_norm)
        for s, a in zip(seqs, adv.tolist()):
            s["adv"] = a

        # 10. I mini-batch updates; old log-probs are those of the policy that sampled
        t = time.time()
        iters = plan_minibatches(seqs, cfg.iters_per_step, rng, accelerator.process_index, accelerator.num_processes,
                                 cfg.skip_zero_adv)
        entropy = old_logprobs(model, seqs, cfg, pad_id, accelerator)
        m["sync/logprob_abs_diff"] = sync_check(seqs, cfg.sync_warn, step + 1, accelerator)
        m.update(ppo_update(model, optimizer, accelerator, seqs, cfg, pad_id, iters))
        # the engine samples the next step from the updated weights (gathered in full under FSDP)
        student.sync_weights(accelerator.unwrap_model(model),
                             accelerator.get_state_dict(model) if cfg.engine == "vllm" else None)
        timer["update"] += time.time() - t

        # 11. buffer update from plain rollouts only
        if cfg.buffer:
            moves = buffer.update([(ex, int(sum(rs)), len(rs)) for ex, rs in zip(questions, plain_rewards)], cfg.tau)
            m.update({f"buffer/{k}": v for k, v in moves.items()})

        # metrics the paper's analyses need
        groups = defaultdict(list)
        for s in seqs:
            groups[s["group"]].append(s["reward"])
        by_kind = lambda kind: [s["reward"] for s in seqs if s["kind"] == kind]  # noqa: E731
        lengths = lambda rolls: [len(r.token_ids) for g in rolls for r in g]  # noqa: E731
        m.update({
            "acc/plain": mean(by_kind("plain")), "acc/plain_new": mean(acc[:len(new)]),
            "acc/replay": mean(acc[len(new):]), "acc/bcq": mean(by_kind("bcq")), "acc/ncq": mean(by_kind("ncq")),
            "count/questions": len(questions), "count/replayed": len(replay), "count/hard": len(hard),
            "count/bcq": sum(k == "bcq" for _, k in chosen), "count/ncq": sum(k == "ncq" for _, k in chosen),
            "count/no_teacher_correct": sum(not ok for ok in teacher_ok.values()) if cfg.bcq else 0,
            "count/teacher_failed": getattr(teacher, "failures", 0) - teacher_failures,
            "adv/positive_frac": mean([a > 0 for a in adv.tolist()]),
            "groups/trivial_frac": mean([max(rs) == min(rs) for rs in groups.values()]),
            "policy/entropy": entropy, "buffer/size": len(buffer),
            "len/plain": mean(lengths(plain)), "len/reformulated": mean(lengths(reform)),
            "len/clipped_frac": mean([r.finish_reason == "length" for g in plain + reform for r in g]),
            **{f"time/{k}": v for k, v in timer.items()}, "time/step": time.time() - t_step,
        })
        if cfg.buffer:
            m.update({f"buffer/graduated_total_from_{k}": v for k, v in buffer.graduated_by_bin.items()})
            m.update({f"buffer/admitted_total_at_{k}": v for k, v in buffer.admitted_by_bin.items()})
        if cfg.eval_benchmarks and ((cfg.eval_every and (step + 1) % cfg.eval_every == 0) or step + 1 == cfg.steps):
            summary = run_benchmarks(student, cfg.eval_benchmarks.split(","), cfg.eval_samples, cfg.eval_max_new_tokens,
                                     judge=teacher, data_dir=cfg.eval_data_dir, limit=cfg.eval_limit, log=bar.write)
            m.update({f"eval/{name}": r["accuracy"] for name, r in summary["benchmarks"].items()})
            m.update({f"eval/macro_{fam}": acc for fam, acc in summary["macro"].items()})
            bar.write(f"step {step + 1}: " + ", ".join(f"{k} {v:.3f}" for k, v in m.items() if k.startswith("eval/")))
        if accelerator.num_processes > 1:  # DDP/FSDP keep the ranks identical; check it, cheaply
            checksum = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum().reshape(1)
            sums = accelerator.gather(checksum)
            m["dist/weight_checksum_spread"] = (sums.max() - sums.min()).item()
        if cfg.dump_rollouts and accelerator.is_main_process:
            with open(os.path.join(cfg.out_dir, "rollouts.jsonl"), "a") as f:
                f.writelines(json.dumps({"step": step + 1, "group": s["group"], "kind": s["kind"], "reward": s["reward"],
                                         "adv": s["adv"], "tokens": len(s["token_ids"])}) + "\n" for s in seqs)
        if dump is not None:
            for (i, kind), p, g, rs in zip(chosen, prompts, reform, reform_rewards):
                dump.write(json.dumps({"step": step + 1, "kind": kind, "id": questions[i]["id"], "prompt": p,
                                       "answer": questions[i]["answer"],
                                       "rollouts": [{"text": r.text, "reward": x} for r, x in zip(g, rs)]}) + "\n")
            dump.flush()
        if accelerator.is_main_process:
            with open(log_path, "a") as f:
                f.write(json.dumps({"step": step + 1, **m}) + "\n")
            accelerator.log({k: v for k, v in m.items() if v is not None}, step=step + 1)
        bar.set_postfix(acc=f"{m['acc/plain']:.2f}", bcq=f"{m['acc/bcq']:.2f}", ncq=f"{m['acc/ncq']:.2f}",
                        buf=len(buffer), t=f"{m['time/step']:.0f}s")
        if (cfg.save_every and (step + 1) % cfg.save_every == 0) or step + 1 == cfg.steps:
            full = accelerator.get_state_dict(model)  # collective under FSDP: every rank takes part
            if accelerator.is_main_process:
                save_checkpoint(cfg, step + 1, model, full, tokenizer, optimizer, buffer, data_pos, rng, accelerator)
            accelerator.wait_for_everyone()
    if dump is not None:
        dump.close()
    accelerator.end_training()
    return log_path


if __name__ == "__main__":
    main(parse_config())
