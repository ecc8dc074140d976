"""The student's answers to a benchmark, scored by its protocol (docs/EVAL.md; docs/evaluation.md):

  Exact+Judge  reward.py: the rule grader on the final answer's last \\boxed{}; every response it cannot
               resolve (free-form gold, no parseable box in the final answer, cut by the token limit with a
               wrong box) goes to the judge with the paper's prompt and the full response.
  Rule+Judge   the benchmark's own deterministic parser on the final answer's box (MathVista's
               normalize_extracted_answer, MVBench's and Video-MME's letter extraction: RULE_PARSERS); what it
               cannot read goes to the judge as in Exact+Judge.
  Det.         the benchmark's own metric, no judge (InfographicVQA's ANLS, OCRBench v2's scorer).
  BenchJudge   the benchmark's own judge (BENCH_JUDGES: prompt, parser, re-asks; judges.py).

`evaluate` is avg@k of one benchmark (mean reward over k samples per question; k = 1 is pass@1) with its
standard error over questions, sent to the engine in chunks of questions. A chunk is the unit a rerun
resumes from: with a row cache (cache.py) every finished chunk's responses and verdicts are kept, and with a
seed each chunk's sampling is seeded by (seed, benchmark, chunk), so a run killed and rerun samples what an
uninterrupted run samples. `run_benchmarks` evaluates every named benchmark, each on its own: one that fails
is reported and the others still run.
"""
import hashlib
import json
import math
import time
import traceback
import zlib
from collections import Counter
from types import SimpleNamespace

from tqdm import tqdm

from benchmarks import BENCHMARKS, paper_families
from benchmarks.charxiv import (
    charxiv_descriptive_prompt,
    charxiv_reasoning_prompt,
    parse_charxiv_descriptive,
    parse_charxiv_reasoning,
)
from benchmarks.det import final_answer, score_anls
from benchmarks.judges import bench_judge_scores
from benchmarks.llm import hle_prompt, multichallenge_prompt, parse_hle, parse_multichallenge
from benchmarks.load import load_benchmark
from benchmarks.mathvista import mathvista_verdict
from benchmarks.mmvet import RETRIES, mmvet_prompt, mmvet_retry, parse_mmvet
from benchmarks.ocrbench import score_ocrbench
from benchmarks.videoqa import mmvu_prompt, mvbench_verdict, parse_mmvu, videomme_verdict
from reformulate import plain_prompt, with_closer
from reward import final_boxed, judge_verdicts, score_detailed, verdict_of

# The paper's decoding for every benchmark, each field explicit so no engine or checkpoint default applies
# (the engines also keep a checkpoint's generation_config.json out of sampling: rollout.py; they never apply
# min-p or a repetition penalty, the paper's min-p 0 and repetition penalty 1).
SAMPLING = dict(temperature=0.6, top_p=0.95, top_k=20, presence_penalty=1.5)
# A cached verdict is reused only when it was scored by this version of the scorers (raise it when a scorer
# changes what it returns) with the same judge and gold answer; otherwise the cached responses are re-scored.
SCORER_VERSION = "2"

BENCH_JUDGES = {  # route -> the benchmark's own judge (judges.bench_judge_scores)
    "multichallenge": {"prompt": multichallenge_prompt, "parse": parse_multichallenge},
    "hle": {"prompt": hle_prompt, "parse": parse_hle},
    "mmvet": {"prompt": mmvet_prompt, "parse": parse_mmvet, "retry": mmvet_retry, "retries": RETRIES},
    "charxiv_reasoning": {"prompt": charxiv_reasoning_prompt, "parse": parse_charxiv_reasoning},
    "charxiv_descriptive": {"prompt": charxiv_descriptive_prompt, "parse": parse_charxiv_descriptive},
    "mmvu": {"prompt": mmvu_prompt, "parse": parse_mmvu},
}
RULE_PARSERS = {"mathvista": mathvista_verdict, "mvbench": mvbench_verdict, "videomme": videomme_verdict}
DET_SCORERS = {"anls": score_anls, "ocrbench": score_ocrbench}


def student_prompt(example, multichallenge_closer=True):
    """The question with the closer, after its images when it has some. A MultiChallenge conversation goes as
    the chat it is, the closer after its last user turn: the paper's "single shared RL closer" for every
    benchmark (its judge reads the reply after </think>, box included). multichallenge_closer=False sends the
    chat untouched (our option: a demanded \\boxed{} changes what the user asked for)."""
    if "messages" not in example:
        return plain_prompt(example)
    chat = [dict(m) for m in example["messages"]]
    last = max((i for i, m in enumerate(chat) if m["role"] == "user"), default=None)
    if multichallenge_closer and last is not None:
        chat[last]["content"] = with_closer(chat[last]["content"])
    return chat


def parser_verdicts(pairs, judge, truncated):
    """Rule+Judge with the benchmark's parser: per (example, response) the parser's 0/1 on the final answer's
    box, or the judge (the paper's prompt) where there is no box, the parser cannot read it, or a cut
    response's box is wrong (as Exact+Judge treats a cut response)."""
    rule = []
    for (ex, text), cut in zip(pairs, truncated):
        box = final_boxed(text)
        score = RULE_PARSERS[ex["route"]](box, ex) if box and box.strip() else None
        rule.append(score if score == 1.0 or (score == 0.0 and not cut) else None)
    pending = [p for p, s in zip(pairs, rule) if s is None]
    judged = iter(judge_verdicts(judge, pending) if judge is not None else [])
    out = []
    for s in rule:
        if s is not None:
            out.append({"score": s, "via": "rule"})
        elif judge is None:
            out.append({"score": 0.0, "via": "unresolved"})
        else:
            score, reply = next(judged)
            out.append({"score": score, "via": "judge", "judge_reply": reply})
    return out


def score_groups(groups, examples, judge):
    """Per response (nested like `groups`) a dict: score, via (rule / det / judge / unresolved), the judge's
    reply. Exact+Judge rows go through reward.score_detailed with truncation marked, Rule+Judge rows through
    their parser, Det. rows through their metric, BenchJudge rows to their judge."""
    flat = [(ex, r) for ex, g in zip(examples, groups) for r in g]
    verdicts = [None] * len(flat)
    routes = [ex.get("route", "rule") for ex, _ in flat]
    for i, (ex, r) in enumerate(flat):  # Det.: the benchmark's own metric, no judge
        if routes[i] in DET_SCORERS:
            verdicts[i] = {"score": DET_SCORERS[routes[i]](r.text, ex), "via": "det"}
    parsed = [i for i, route in enumerate(routes) if route in RULE_PARSERS]
    exact = [i for i, route in enumerate(routes)
             if route not in DET_SCORERS and route not in BENCH_JUDGES and route not in RULE_PARSERS]
    for mine, grade in ((exact, score_detailed), (parsed, parser_verdicts)):
        details = grade([(flat[i][0], flat[i][1].text) for i in mine], judge,
                        [flat[i][1].finish_reason == "length" for i in mine])
        for i, d in zip(mine, details):
            if d["via"] == "judge":  # a failed judge call (no reply) is a failure, not a wrong answer
                d["judge_failed"] = d["judge_reply"] is None
                d["malformed"] = not d["judge_failed"] and verdict_of(d["judge_reply"]) is None
            verdicts[i] = d
    for route, spec in BENCH_JUDGES.items():
        mine = [i for i, r in enumerate(routes) if r == route]
        for i, d in zip(mine, bench_judge_scores(judge, [flat[i] for i in mine], spec)):
            verdicts[i] = d
    nested, it = [], iter(verdicts)
    for g in groups:
        nested.append([next(it) for _ in g])
    return nested


def mean_stderr(values):
    """Mean and standard error of the mean; (nan, nan) for no values (the caller reports why there are
    none)."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    return mean, math.sqrt(var / n)


def row_key(example, prompt):
    """A row's cache key: its id and everything the student was sent (question, images, the closer)."""
    text = json.dumps({"id": example["id"], "prompt": prompt}, sort_keys=True, ensure_ascii=False,
                      default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:20]


def evaluate(engine, examples, samples=1, max_new_tokens=1024, judge=None, desc=None, chunk=512,
             multichallenge_closer=True, cache=None, seed=None, **sampling):
    """avg@k of `engine` on `examples`, questions sent to the engine in chunks of `chunk`. `cache`: a
    cache.RowCache (rows found there are not generated again; each finished chunk is added to it); `seed`:
    a text that, with the chunk's start, seeds the chunk's sampling (torch's generator: the transformers
    engine), so a chunk samples the same whatever ran before it."""
    if not examples:
        raise ValueError("evaluate: no examples")
    sampling = {**SAMPLING, **sampling}
    prompts = [student_prompt(ex, multichallenge_closer) for ex in examples]
    keys = [row_key(ex, p) for ex, p in zip(examples, prompts)]
    scorers = [{"version": SCORER_VERSION, "judge": cache.judge if cache else None,
                "answer": json.dumps(ex["answer"], sort_keys=True, default=str)} for ex in examples]
    groups, verdicts = [None] * len(examples), [None] * len(examples)
    for i, key in enumerate(keys):
        entry = cache.get(key) if cache else None
        if entry and len(entry["responses"]) == samples:
            groups[i] = [SimpleNamespace(text=t, finish_reason=f) for t, f in entry["responses"]]
            # a verdict is kept if the same judge gave it to the same gold answer, and not if its judge call
            # failed (a rerun asks again)
            failed = any(v.get("judge_failed") for v in entry["verdicts"])
            reuse = entry.get("scorer") == scorers[i] and not failed
            verdicts[i] = entry["verdicts"] if reuse else None
    reused = sum(g is not None for g in groups)
    bar = tqdm(total=len(examples), desc=desc or "eval", disable=desc is None, unit="q")
    for start in range(0, len(examples), chunk):
        rows = range(start, min(start + chunk, len(examples)))
        new = [i for i in rows if groups[i] is None]
        if new:
            if seed is not None:
                import torch

                torch.manual_seed(zlib.crc32(f"{seed}|{start}".encode()))
            outs = engine.generate([prompts[i] for i in new], n=samples, max_new_tokens=max_new_tokens,
                                   **sampling)
            for i, g in zip(new, outs):
                groups[i] = g
        todo = [i for i in rows if verdicts[i] is None]
        for i, v in zip(todo, score_groups([groups[i] for i in todo], [examples[i] for i in todo], judge)):
            verdicts[i] = v
        if cache is not None and todo:  # the chunk is finished: kept for a rerun
            cache.put([{"key": keys[i], "id": examples[i]["id"], "scorer": scorers[i],
                        "responses": [[r.text, r.finish_reason] for r in groups[i]], "verdicts": verdicts[i]}
                       for i in todo])
        bar.update(len(rows))
    bar.close()
    per_question = [sum(v["score"] for v in vs) / samples for vs in verdicts]
    accuracy, stderr = mean_stderr(per_question)
    records = []
    for ex, g, vs in zip(examples, groups, verdicts):
        for k, (r, v) in enumerate(zip(g, vs)):
            extracted = v["judge"].get("extracted") if "judge" in v else \
                final_answer(r.text) if v["via"] == "det" else final_boxed(r.text)
            records.append({"id": ex["id"], "sample": k, "answer": ex["answer"], "response": r.text,
                            "extracted": extracted, "route": ex.get("route", "rule"), "scored_by": v["via"],
                            "correct": bool(v["score"]), "score": v["score"],
                            "truncated": r.finish_reason == "length",
                            "judge_failed": v.get("judge_failed", False),
                            **({"judge_reply": v["judge_reply"]} if "judge_reply" in v else {}),
                            **({"judge_retries": v["judge_retries"]} if v.get("judge_retries") else {}),
                            **({"judge_fields": v["judge"]} if "judge" in v else {})})
    flat = [v for vs in verdicts for v in vs]
    via = Counter(v["via"] for v in flat)
    return {"accuracy": accuracy, "stderr": stderr, "questions": len(examples), "samples": samples,
            "judged": via["judge"], "unresolved": via["unresolved"],
            "judge_malformed": sum(v.get("malformed", False) for v in flat),
            "judge_failed": sum(v.get("judge_failed", False) for v in flat),
            "judge_retried": sum(v.get("judge_retries", 0) for v in flat), "cached": reused,
            "records": records}


def _no_questions(limit, skipped):
    if limit == 0:
        return "no questions to evaluate: --limit 0"
    if skipped:
        reasons = ", ".join(f"{k}: {v}" for k, v in skipped.items())
        return f"no questions to evaluate: every row was skipped ({reasons})"
    return "no questions to evaluate: the file or split is empty"


def run_benchmarks(engine, names, samples=1, max_new_tokens=1024, judge=None, data_dir=None, limit=None,
                   log=print, redux_rows="ok", on_update=None, video=None, multichallenge_closer=True,
                   options=None, cache_for=None, seed=None, chunk=512, **sampling):
    """Every named benchmark, each loaded and evaluated on its own: a benchmark that is unknown, cannot load,
    has no questions or fails while evaluating is reported in `errors` and the rest still run. `on_update` is
    called with the summary so far after every benchmark. Image rows go to a vision-language student (its
    tokenizer carries an image processor) and are skipped for a text one. `options`: prompt choices for the
    converters (load.load_benchmark); `cache_for(name)`: the benchmark's cache.RowCache or None; `seed`:
    seeds each chunk's sampling (evaluate)."""
    results, errors = {}, {}
    vision = getattr(getattr(engine, "tokenizer", None), "image_processor", None) is not None
    for name in names:
        start = time.time()
        try:
            examples, skipped = load_benchmark(name, data_dir, limit, redux_rows, vision, video, options)
            if not examples:
                raise ValueError(_no_questions(limit, skipped))
            spec = BENCHMARKS[name]
            if judge is None and spec["protocol"] == "BenchJudge":
                log(f"[warning] {name}: no judge model; every response is unresolved and scores 0 "
                    "(see --judge)")
            res = evaluate(engine, examples, samples, max_new_tokens, judge, desc=name, chunk=chunk,
                           multichallenge_closer=multichallenge_closer,
                           cache=cache_for(name) if cache_for else None,
                           seed=None if seed is None else f"{seed}|{name}", **sampling)
            if spec.get("aggregate"):  # upstream's headline is the benchmark's score (OCRBench v2)
                headline, extra = spec["aggregate"](examples, res["records"])
                res = dict(res, accuracy=headline, question_mean=res["accuracy"], **extra)
            if spec.get("headline"):  # what the benchmark's own evaluator reports beside it
                res["upstream"] = spec["headline"](examples, res["records"], samples)
            results[name] = dict(res, family=spec["family"], protocol=spec["protocol"], skipped=skipped,
                                 seconds=time.time() - start, examples=examples)
            # the score counts them as wrong: say so, it is no measurement of the model
            if res["judge_failed"]:
                log(f"[warning] {name}: {res['judge_failed']} of {res['judged']} judge calls failed "
                    "(no reply): scored 0, so the score is only a lower bound; check the judge "
                    "(--judge-url, --judge-timeout, --judge-retries)")
        except Exception as e:  # noqa: BLE001 (one benchmark's failure never costs the others)
            errors[name] = str(e) if isinstance(e, (ValueError, RuntimeError)) else f"{type(e).__name__}: {e}"
            log(f"[failed] {name}: {errors[name]}")
            if not isinstance(e, (ValueError, RuntimeError)):  # unexpected: keep the trace for the report
                log(traceback.format_exc())
        if on_update is not None:
            on_update(summarize(results, errors))
    return summarize(results, errors)


def summarize(results, errors):
    """The per-benchmark results, each family's macro average (unweighted over its benchmarks, as the paper
    averages its tables), and the failures."""
    families = {}
    for res in results.values():
        families.setdefault(res["family"], []).append(res["accuracy"])
    macro = {fam: sum(accs) / len(accs) for fam, accs in families.items()}
    # a paper family averaged over fewer benchmarks than its table is not the table's average: name the absent
    missing = {fam: [n for n in names if n not in results] for fam, names in paper_families().items()
               if fam in families and any(n not in results for n in names)}
    return {"benchmarks": results, "macro": macro, "macro_over": {f: len(a) for f, a in families.items()},
            "macro_missing": missing, "errors": errors}


def judge_failures(summary):
    """The benchmarks whose score counts failed judge calls as wrong answers."""
    return [name for name, r in summary["benchmarks"].items() if r.get("judge_failed")]
