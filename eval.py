"""Benchmark evaluation, as the paper scores it (its appendix B.2 and the project's EVAL.md; README
"Evaluation").

    python eval.py --model runs/demo/zppo/checkpoints/step_000010 --benchmarks arithmetic
    python eval.py --model Qwen3.5-0.8B --benchmarks aime2025,mmlu_redux,hle --judge Qwen3.5-27B \\
        --out results.json
    python eval.py --model M --benchmarks gsm8k --data-dir benchmarks/   # offline: benchmarks/gsm8k.jsonl

Protocol: each benchmark's own format directives ("Think step by step", "put your final answer within
\\boxed{}", ...) are stripped and only the spec's closer is appended; every sampling field is set
(SAMPLING: temperature 0.6, top-p 0.95, top-k 20, presence penalty 1.5; min-p 0 and repetition penalty 1, the
paper's other two, are what the engines always use); the score is avg@k
(mean reward over k samples per question; k = 1 is pass@1) with its standard error over questions.
Each benchmark is scored by its protocol in the paper's Tables 5-7 (`protocol` in bench_data.BENCHMARKS):
  Exact+Judge  reward.py: the rule grader first; every response it cannot resolve (free-form gold, no
               parseable box, truncated) goes to the judge with the paper's prompt and the full response.
  Rule+Judge   a benchmark-specific parser first (MathVista's choices, ...), then the judge, as Exact+Judge.
  Det.         the benchmark's own deterministic metric, no judge: InfographicVQA's ANLS, OCRBench v2's scorer
               per task type (benchmarks.py).
  BenchJudge   the benchmark's official judge: MultiChallenge's YES/NO verifier, HLE's CAIS judge, MM-Vet's
               0-1 grader, CharXiv's reasoning/descriptive graders, MMVU's judge (benchmarks.py; prompts
               verbatim in bench_prompts.py).
Image rows go to a vision-language student with their images, video rows with frames sampled from the file
(video.py; --video-fps, --video-max-frames, --video-dir); `--list` prints every benchmark with its family,
source and protocol.
Without a judge, responses that need one score 0 and are counted as `unresolved`. Each benchmark is loaded
and evaluated on its own: one that fails is reported and the others still run; --out is rewritten after
every benchmark, and the process exits non-zero when a requested benchmark failed or is unknown.
"""
import importlib.util
import json
import math
import os
import re
import sys
import time
import traceback
from collections import Counter
from dataclasses import asdict, dataclass, field

import jinja2
from tqdm import tqdm
from transformers import HfArgumentParser

import benchmarks
from bench_data import BENCHMARKS, PAPER_FAMILIES, REDUX_ROWS, load_benchmark, paper_families
from reformulate import plain_prompt, with_closer
from reward import (
    JUDGE_MAX_NEW_TOKENS,
    JUDGE_SAMPLING,
    after_thinking,
    clip_start,
    last_boxed,
    score_detailed,
    verdict_of,
)

# ---------------------------------------------------------------------------------------------------------
# decoding

# The paper's decoding for every benchmark, each field explicit so no engine or checkpoint default applies
# (the engines also keep a checkpoint's generation_config.json out of sampling: rollout.py; they never apply
# min-p or a repetition penalty, the paper's min-p 0 and repetition penalty 1).
SAMPLING = dict(temperature=0.6, top_p=0.95, top_k=20, presence_penalty=1.5)


# ---------------------------------------------------------------------------------------------------------
# BenchJudge: the benchmarks' own judges

# Scale AI's MultiChallenge verifier: the judge answers the row's target_question about the student's final
# reply, and the row passes when that YES/NO equals pass_criteria. The text is the official evaluator's
# JUDGE_PROMPT (scaleapi multichallenge repo, src/evaluator.py) as the paper prints it (Fig. 11) and public
# ports of that file reproduce it; it was not fetched from the repo (no network here): check it against the
# upstream evaluator. Upstream reads {reasoning, verdict} through OpenAI structured output; a local judge has
# no schema, so the verdict is read from the text (`yes_no_verdict`).
MULTICHALLENGE_PROMPT = """You are tasked with evaluating a model response to see if it meets a specific criteria.
The criteria will always be YES/NO evaluation.

The model response is as follows:
<MODEL_RESPONSE>
{{ response }}
</MODEL_RESPONSE>

The criteria that the model response must meet is as follows. Be VERY STRICT!:
<CRITERIA>
{{ target_question }}
</CRITERIA>

Print your reasoning followed by your verdict, either "YES" or "NO"."""  # noqa: E501  (verbatim prompt lines)

# CAIS's HLE judge: JUDGE_PROMPT of the official evaluator (centerforaisafety hle repo,
# hle_eval/run_judge_results.py; "if there if there" is upstream's), as public ports of that file reproduce it
# and the paper summarises it (Fig. 13); not fetched from the repo (no network here): check it against the
# upstream evaluator. Upstream reads the four fields through OpenAI structured output (ExtractedAnswer:
# extracted_final_answer, reasoning, correct "yes"|"no", confidence); a local judge has no schema, so the last
# paragraph, the paper's Fig. 13 wording, asks for that JSON object.
HLE_PROMPT = r"""Judge whether the following [response] to [question] is correct or not based on the precise and unambiguous [correct_answer] below.

[question]: {{ question }}

[response]: {{ response }}

Your judgement must be in the format and criteria specified below:

extracted_final_answer: The final exact answer extracted from the [response]. Put the extracted answer as 'None' if there is no exact, final answer to extract from the response.

[correct_answer]: {{ correct_answer }}

reasoning: Explain why the extracted_final_answer is correct or incorrect based on [correct_answer], focusing only on if there are meaningful differences between [correct_answer] and the extracted_final_answer. Do not comment on any background to the problem, do not attempt to solve the problem, do not argue for any answer different than [correct_answer], focus only on whether the answers match.

correct: Answer 'yes' if extracted_final_answer matches the [correct_answer] given above, or is within a small margin of error for numerical problems. Answer 'no' otherwise, i.e. if there if there is any inconsistency, ambiguity, non-equivalency, or if the extracted answer is incorrect.


confidence: The extracted confidence score between 0|\%| and 100|\%| from [response]. Put 100 if there is no confidence score available.

Respond with ONLY a single JSON object using exactly these keys: extracted_final_answer, reasoning, correct ("yes"/"no"), confidence (integer 0-100)."""  # noqa: E501  (verbatim prompt lines)
HLE_KEYS = {"extracted_final_answer", "reasoning", "correct", "confidence"}
_MULTICHALLENGE_TEMPLATE, _HLE_TEMPLATE = jinja2.Template(MULTICHALLENGE_PROMPT), jinja2.Template(HLE_PROMPT)


def final_reply(text):
    """What MultiChallenge grades: the reply the user would read (after any </think>), not the reasoning."""
    return after_thinking(text)


def multichallenge_prompt(example, response):
    return _MULTICHALLENGE_TEMPLATE.render(response=clip_start(final_reply(response)),
                                           target_question=example["target_question"])


def yes_no_verdict(reply):
    """"YES" or "NO" from a MultiChallenge judge reply: a {"reasoning", "verdict"} JSON object (upstream's
    schema) or, as the prompt asks, reasoning followed by the verdict: the last standalone upper-case YES or
    NO (lower case is prose: "there is no ..."); None when there is neither."""
    text = after_thinking(reply)
    try:
        obj = json.loads(text)
        if isinstance(obj, dict) and obj.get("verdict") in ("YES", "NO"):
            return obj["verdict"]
    except (ValueError, RecursionError):
        pass
    found = re.findall(r"\b(YES|NO)\b", text)
    return found[-1] if found else None


def parse_multichallenge(reply, example):
    verdict = yes_no_verdict(reply)
    return None if verdict is None else {"score": float(verdict == example["answer"]), "verdict": verdict}


def hle_prompt(example, response):
    # the paper: CAIS's judge inspects the full response, reasoning included
    return _HLE_TEMPLATE.render(question=example["question"], response=clip_start(response),
                                correct_answer=example["answer"])


def parse_hle(reply, example):
    """The CAIS judge's four fields as one JSON object (a think block before it is allowed; `strict`, a field
    of upstream's schema, may be present); None for anything else, which scores 0."""
    try:
        obj = json.loads(after_thinking(reply))
    except (ValueError, RecursionError):
        return None
    if not (isinstance(obj, dict) and HLE_KEYS <= set(obj) <= HLE_KEYS | {"strict"}
            and obj["correct"] in ("yes", "no")):
        return None
    return {"score": float(obj["correct"] == "yes"), "extracted": str(obj["extracted_final_answer"]),
            "confidence": obj["confidence"]}


BENCH_JUDGES = {"multichallenge": (multichallenge_prompt, parse_multichallenge),
                "hle": (hle_prompt, parse_hle)}
BENCH_JUDGES.update(benchmarks.JUDGES)  # MM-Vet, CharXiv (reasoning, descriptive), MMVU
DET_SCORERS = benchmarks.DET_SCORERS  # route -> score(response, example): ANLS, OCRBench v2


def bench_judge_scores(judge, items, make_prompt, parse):
    """(example, Rollout) items -> per item score/via/judge reply, one judge batch, the paper's judge
    decoding. Without a judge every item is unresolved (0); a reply the parser cannot read scores 0
    (malformed)."""
    if not items:
        return []
    if judge is None:
        return [{"score": 0.0, "via": "unresolved"} for _ in items]
    outs = judge.generate([make_prompt(ex, r.text) for ex, r in items], n=1,
                          max_new_tokens=JUDGE_MAX_NEW_TOKENS, **JUDGE_SAMPLING)
    results = []
    for (ex, _), out in zip(items, outs):
        reply = out[0].text if out else None  # a remote judge that failed for good returns no rollout
        parsed = parse(reply, ex) if reply is not None else None
        results.append({"score": parsed["score"] if parsed else 0.0, "via": "judge", "judge_reply": reply,
                        "malformed": parsed is None and reply is not None, "judge_failed": reply is None,
                        **({"judge": parsed} if parsed else {})})
    return results


# ---------------------------------------------------------------------------------------------------------
# scoring


def mean_stderr(values):
    """Mean and standard error of the mean; (nan, nan) for no values (the caller reports why there are
    none)."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    return mean, math.sqrt(var / n)


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


def score_groups(groups, examples, judge):
    """Per response (nested like `groups`) a dict: score, via (rule / judge / unresolved), the judge's reply.
    Exact+Judge rows go through reward.score_detailed with truncation marked; BenchJudge rows to their
    judge."""
    flat = [(ex, r) for ex, g in zip(examples, groups) for r in g]
    verdicts = [None] * len(flat)
    exact = [i for i, (ex, _) in enumerate(flat)
             if ex.get("route") not in BENCH_JUDGES and ex.get("route") not in DET_SCORERS]
    for i, (ex, r) in enumerate(flat):  # Det.: the benchmark's own metric, no judge
        if ex.get("route") in DET_SCORERS:
            verdicts[i] = {"score": DET_SCORERS[ex["route"]](r.text, ex), "via": "det"}
    details = score_detailed([(flat[i][0], flat[i][1].text) for i in exact], judge,
                             [flat[i][1].finish_reason == "length" for i in exact])
    for i, d in zip(exact, details):
        if d["via"] == "judge":  # a failed judge call (no reply) is a failure, not a wrong answer
            d["judge_failed"] = d["judge_reply"] is None
            d["malformed"] = not d["judge_failed"] and verdict_of(d["judge_reply"]) is None
        verdicts[i] = d
    for route, (make_prompt, parse) in BENCH_JUDGES.items():
        mine = [i for i, (ex, _) in enumerate(flat) if ex.get("route") == route]
        for i, d in zip(mine, bench_judge_scores(judge, [flat[i] for i in mine], make_prompt, parse)):
            verdicts[i] = d
    nested, it = [], iter(verdicts)
    for g in groups:
        nested.append([next(it) for _ in g])
    return nested


def evaluate(engine, examples, samples=1, max_new_tokens=1024, judge=None, desc=None, chunk=512,
             multichallenge_closer=True, **sampling):
    """avg@k of `engine` on `examples`, questions sent to the engine in batches of `chunk`."""
    if not examples:
        raise ValueError("evaluate: no examples")
    sampling = {**SAMPLING, **sampling}
    prompts = [student_prompt(ex, multichallenge_closer) for ex in examples]
    groups = []
    for start in tqdm(range(0, len(prompts), chunk), desc=desc or "eval", disable=desc is None):
        groups += engine.generate(prompts[start:start + chunk], n=samples, max_new_tokens=max_new_tokens,
                                  **sampling)
    verdicts = score_groups(groups, examples, judge)
    per_question = [sum(v["score"] for v in vs) / samples for vs in verdicts]
    accuracy, stderr = mean_stderr(per_question)
    records = []
    for ex, g, vs in zip(examples, groups, verdicts):
        for r, v in zip(g, vs):
            extracted = v["judge"].get("extracted") if "judge" in v else \
                benchmarks.final_answer(r.text) if v["via"] == "det" else last_boxed(r.text)
            records.append({"id": ex["id"], "answer": ex["answer"], "response": r.text,
                            "extracted": extracted, "route": ex.get("route", "rule"), "scored_by": v["via"],
                            "correct": bool(v["score"]), "score": v["score"],
                            "truncated": r.finish_reason == "length",
                            "judge_failed": v.get("judge_failed", False),
                            **({"judge_reply": v["judge_reply"]} if "judge_reply" in v else {}),
                            **({"judge_fields": v["judge"]} if "judge" in v else {})})
    via = Counter(v["via"] for vs in verdicts for v in vs)
    return {"accuracy": accuracy, "stderr": stderr, "questions": len(examples), "samples": samples,
            "judged": via["judge"], "unresolved": via["unresolved"],
            "judge_malformed": sum(v.get("malformed", False) for vs in verdicts for v in vs),
            "judge_failed": sum(v.get("judge_failed", False) for vs in verdicts for v in vs),
            "records": records}


def _no_questions(limit, skipped):
    if limit == 0:
        return "no questions to evaluate: --limit 0"
    if skipped:
        reasons = ", ".join(f"{k}: {v}" for k, v in skipped.items())
        return f"no questions to evaluate: every row was skipped ({reasons})"
    return "no questions to evaluate: the file or split is empty"


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


def source_of(spec):
    """Where a benchmark's rows come from, as --list prints it."""
    if spec["hub"] is None:
        return "generated"
    configs = spec.get("configs")
    where = (f" ({len(configs)} configs)" if configs else f" config {spec['config']}" if spec.get("config")
             else "")
    splits = spec.get("splits")
    split = f"splits {splits[0]}..{splits[-1]}" if splits else f"split {spec['split']}"
    return f"{spec['hub']}{where}, {split}"


def list_table():
    """Every benchmark with its family, source and protocol (the paper's families first)."""
    order = sorted(BENCHMARKS,
                   key=lambda n: (list(PAPER_FAMILIES) + ["math", "extra"]).index(BENCHMARKS[n]["family"]))
    lines = ["| benchmark | family | source | protocol |", "| --- | --- | --- | --- |"]
    lines += [f"| {n} | {BENCHMARKS[n]['family']} | {source_of(BENCHMARKS[n])} | "
              f"{BENCHMARKS[n]['protocol']} |" for n in order]
    counts = ", ".join(f"{fam} {len(names)}" for fam, names in paper_families().items())
    return "\n".join(lines + [f"paper families: {counts}; math and extra are not in the paper's averages"])


def run_benchmarks(engine, names, samples=1, max_new_tokens=1024, judge=None, data_dir=None, limit=None,
                   log=print, redux_rows="ok", on_update=None, video=None, multichallenge_closer=True,
                   **sampling):
    """Every named benchmark, each loaded and evaluated on its own: a benchmark that is unknown, cannot load,
    has no questions or fails while evaluating is reported in `errors` and the rest still run. `on_update` is
    called with the summary so far after every benchmark (eval.py writes --out there). Image rows go to a
    vision-language student (its tokenizer carries an image processor) and are skipped for a text one."""
    results, errors = {}, {}
    vision = getattr(getattr(engine, "tokenizer", None), "image_processor", None) is not None
    for name in names:
        start = time.time()
        try:
            examples, skipped = load_benchmark(name, data_dir, limit, redux_rows, vision, video)
            if not examples:
                raise ValueError(_no_questions(limit, skipped))
            spec = BENCHMARKS[name]
            if judge is None and spec["protocol"] == "BenchJudge":
                log(f"[warning] {name}: no judge model; every response is unresolved and scores 0 "
                    "(see --judge)")
            desc = f"{name} ({len(examples)} x {samples})"
            res = evaluate(engine, examples, samples, max_new_tokens, judge, desc=desc,
                           multichallenge_closer=multichallenge_closer, **sampling)
            # upstream's headline number is not the mean over questions (OCRBench v2)
            if spec.get("aggregate"):
                headline, extra = spec["aggregate"](examples, res["records"])
                res = dict(res, accuracy=headline, question_mean=res["accuracy"], **extra)
            results[name] = dict(res, family=spec["family"], protocol=spec["protocol"], skipped=skipped,
                                 seconds=time.time() - start)
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


def markdown_table(summary):
    head = ["benchmark", "family", "protocol", "accuracy (%)", "± s.e.", "questions x k", "skipped", "judged",
            "unresolved", "seconds"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for name, r in summary["benchmarks"].items():
        skipped = sum(r["skipped"].values())
        why = f" ({', '.join(f'{k} {v}' for k, v in r['skipped'].items())})" if skipped else ""
        lines.append(f"| {name} | {r['family']} | {r['protocol']} | {100 * r['accuracy']:.1f} "
                     f"| {100 * r['stderr']:.1f} | {r['questions']} x {r['samples']} | {skipped}{why} "
                     f"| {r['judged']} | {r['unresolved']} | {r['seconds']:.0f} |")
    for fam, acc in summary["macro"].items():
        lines.append(f"| **{fam} (macro)** | {fam} | mean of {summary['macro_over'][fam]} | {100 * acc:.1f} "
                     "| | | | | | |")
    for name in summary["errors"]:
        lines.append(f"| {name} | failed | | | | | | | | |")
    for fam, absent in summary.get("macro_missing", {}).items():
        total = len(paper_families()[fam])
        lines.append(f"{fam} macro is over {total - len(absent)} of the paper's {total}; missing: "
                     f"{', '.join(absent)}")
    lines += [f"failed: {name}: {err}" for name, err in summary["errors"].items()]
    lines += [f"judge failed: {name}: {r['judge_failed']} of {r['judged']} judge calls (scored 0)"
              for name, r in summary["benchmarks"].items() if r.get("judge_failed")]
    return "\n".join(lines)


@dataclass
class EvalConfig:
    model: str = field(metadata={"help": "model directory, hub id, bare Qwen name or .gguf file"})
    benchmarks: str = field(default="gsm8k", metadata={
        "help": f"comma-separated, from: {', '.join(BENCHMARKS)}"})
    data_dir: str | None = field(default=None, metadata={
        "help": "folder of NAME.jsonl files (rows as the hub serves them), tried before the hub"})
    limit: int | None = field(default=None, metadata={
        "help": "evaluate the first N questions of each benchmark"})
    samples: int = field(default=1, metadata={"help": "k samples per question (avg@k)"})
    max_new_tokens: int = field(default=12_288, metadata={"help": "response cap (paper: 12,288)"})
    judge: str | None = field(default=None, metadata={
        "help": "judge model (paper: the teacher, Qwen3.5-27B-FP8): Exact+Judge fallback and BenchJudge"})
    judge_url: str | None = field(default=None, metadata={"help": "OpenAI-compatible server serving --judge"})
    judge_timeout: float = field(default=600.0, metadata={
        "help": "seconds per judge request, all of it (remote judge)"})
    judge_retries: int = field(default=3, metadata={
        "help": "retries per judge request after a failure (remote judge)"})
    mmlu_redux_rows: str = field(default="ok", metadata={
        "choices": list(REDUX_ROWS),
        "help": "MMLU-Redux rows: ok = only rows annotated ok (lm-evaluation-harness); corrected = every "
                "row, wrong gold answers replaced by correct_answer, multi-answer rows skipped (evalscope)"})
    video_fps: float = field(default=2.0, metadata={
        "help": "video benchmarks: frames sampled per second of the video (the paper gives none: ours)"})
    video_max_frames: int = field(default=32, metadata={
        "help": "video benchmarks: at most this many frames per video, evenly spaced over the whole clip"})
    video_dir: str | None = field(default=None, metadata={
        "help": "folder of the unpacked videos of Video-MME (and its subtitle/), VideoMMMU, MVBench"})
    multichallenge_closer: bool = field(default=True, metadata={
        "help": "append the closer to MultiChallenge's last user turn, as to every benchmark (paper); "
                "--no-multichallenge-closer sends the conversation untouched (our option)"})
    image_min_pixels: int = field(default=256 * 32 * 32, metadata={
        "help": "images are resized to at least this many pixels (paper: 256x32x32), whatever the "
                "checkpoint's own processor says"})
    image_max_pixels: int = field(default=1280 * 32 * 32, metadata={
        "help": "and at most this many (paper: 1280x32x32)"})
    batch_size: int = field(default=64, metadata={
        "help": "sequences per generate call (transformers engine)"})
    engine: str = field(default="auto", metadata={
        "choices": ["auto", "transformers", "vllm"],
        "help": "auto = vllm on GPU if installed, else transformers"})
    vllm_gpu_memory_utilization: float = field(default=0.3, metadata={
        "help": "share of the GPU vLLM may take (on CPU: of the machine's memory)"})
    seed: int = field(default=0, metadata={"help": "sampling seed"})
    out: str | None = field(default=None, metadata={
        "help": "summary JSON here, rewritten after every benchmark"})
    responses: str | None = field(default=None, metadata={
        "help": "every response, extracted answer, route and verdict (JSONL), appended after every "
                "benchmark"})


def main(cfg):
    """Evaluate; the summary is returned and written (--out) after every benchmark, failed ones included."""
    import torch

    from checkpoint import atomic_write
    from rollout import (
        RemoteEngine,
        TransformersEngine,
        VLLMEngine,
        frozen_engine,
        load_model,
        load_tokenizer,
        pick_engine,
        resolve_model_name,
        vllm_dtype,
        vllm_missing,
    )

    names = [n.strip() for n in cfg.benchmarks.split(",") if n.strip()]
    if not names:
        raise ValueError("--benchmarks names no benchmark")
    if cfg.samples < 1 or (cfg.limit is not None and cfg.limit < 0):
        raise ValueError(f"--samples must be >= 1 and --limit >= 0 (got {cfg.samples}, {cfg.limit})")
    if not 0 < cfg.image_min_pixels <= cfg.image_max_pixels:
        raise ValueError(f"--image-min-pixels must be > 0 and at most --image-max-pixels (got "
                         f"{cfg.image_min_pixels}, {cfg.image_max_pixels})")
    if cfg.judge_url and RemoteEngine.url_problem(cfg.judge_url):
        raise ValueError(f"--judge-url {RemoteEngine.url_problem(cfg.judge_url)}")
    if cfg.judge_timeout <= 0 or cfg.judge_retries < 0:
        raise ValueError(f"--judge-timeout must be > 0 and --judge-retries >= 0 (got {cfg.judge_timeout}, "
                         f"{cfg.judge_retries})")
    for path in (cfg.out, cfg.responses):  # found out now, not after the first benchmark has run
        if path and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            raise FileNotFoundError(f"the folder of {path} does not exist")
    for name in names:
        if name not in BENCHMARKS:  # run_benchmarks reports it as failed; say so before the model loads
            print(f"[warning] unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}", file=sys.stderr)
    torch.manual_seed(cfg.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if os.path.isdir(cfg.model):  # a cut weight file, named (safetensors' own error names no file)
        from checkpoint import safetensors_problem

        for name in sorted(os.listdir(cfg.model)):
            problem = (safetensors_problem(os.path.join(cfg.model, name)) if name.endswith(".safetensors")
                       else None)
            if problem:
                raise ValueError(f"--model {cfg.model}: {problem}; evaluate a complete checkpoint "
                                 "(for a run, an earlier one of its checkpoints/)")
    # the judge first: one that cannot work (no server at --judge-url) stops before the model loads
    judge = frozen_engine(cfg.judge, cfg.judge_url, device=device, batch_size=cfg.batch_size,
                          timeout=cfg.judge_timeout, retries=cfg.judge_retries)
    # every checkpoint at the same image resolution: a base model's processor would otherwise use its own
    # defaults and a trained one its training bounds (EVAL.md: min 256x32x32, max 1280x32x32 pixels)
    pixels = (cfg.image_min_pixels, cfg.image_max_pixels)
    if pick_engine(cfg.engine, device) == "vllm":
        if importlib.util.find_spec("vllm") is None:
            raise SystemExit(vllm_missing("--engine vllm"))
        tokenizer, _ = load_tokenizer(resolve_model_name(cfg.model), pixels=pixels)
        engine = VLLMEngine(resolve_model_name(cfg.model), tokenizer, cfg.vllm_gpu_memory_utilization,
                            seed=cfg.seed, dtype=vllm_dtype("auto", device), pixels=pixels)
    else:
        model, tokenizer = load_model(cfg.model, device=device, pixels=pixels)
        engine = TransformersEngine(model.eval(), tokenizer, max_batch_size=cfg.batch_size)
    if cfg.responses:
        open(cfg.responses, "w").close()  # a fresh file; every benchmark's records are appended when it ends
    written = set()

    def write(summary):
        if cfg.responses:
            with open(cfg.responses, "a") as f:
                for name, r in summary["benchmarks"].items():
                    if name not in written:
                        f.writelines(json.dumps({"benchmark": name, **rec}) + "\n" for rec in r["records"])
                        written.add(name)
        if cfg.out:
            slim = {n: {k: v for k, v in r.items() if k != "records"}
                    for n, r in summary["benchmarks"].items()}
            # written whole, then renamed: a crash never leaves half a file
            atomic_write(cfg.out, json.dumps({"config": asdict(cfg), "benchmarks": slim,
                                              "macro": summary["macro"], "macro_over": summary["macro_over"],
                                              "macro_missing": summary["macro_missing"],
                                              "errors": summary["errors"]}, indent=1))

    summary = run_benchmarks(engine, names, cfg.samples, cfg.max_new_tokens, judge, cfg.data_dir, cfg.limit,
                             redux_rows=cfg.mmlu_redux_rows, on_update=write,
                             video=dict(fps=cfg.video_fps, max_frames=cfg.video_max_frames,
                                        dir=cfg.video_dir),
                             multichallenge_closer=cfg.multichallenge_closer)
    print(markdown_table(summary))
    if summary["errors"]:
        failed = ", ".join(summary["errors"])
        print(f"eval.py: {len(summary['errors'])} of {len(names)} benchmarks failed: {failed}",
              file=sys.stderr)
    if judge_failures(summary):
        print(f"eval.py: scores that rest on failed judge calls: {', '.join(judge_failures(summary))}",
              file=sys.stderr)
    return summary


def judge_failures(summary):
    """The benchmarks whose score counts failed judge calls as wrong answers."""
    return [name for name, r in summary["benchmarks"].items() if r.get("judge_failed")]


if __name__ == "__main__":
    if "--list" in sys.argv[1:]:  # no model needed
        print(list_table())
        sys.exit(0)
    summary = main(HfArgumentParser(EvalConfig).parse_args_into_dataclasses()[0])
    sys.exit(1 if summary["errors"] or judge_failures(summary) else 0)
