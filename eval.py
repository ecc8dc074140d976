"""Benchmark evaluation, as the paper does it.

    python eval.py --model runs/demo/zppo/checkpoints/step_000010 --benchmarks arithmetic
    python eval.py --model Qwen3.5-0.8B --benchmarks gsm8k,math500,aime2025 --samples 4 --out results.json
    python eval.py --model M --benchmarks gsm8k --data-dir benchmarks/   # offline: benchmarks/gsm8k.jsonl

Protocol: each benchmark's own format directives ("Think step by step", "put your final answer
within \\boxed{}", ...) are stripped and only the spec's closer is appended; sampling at temperature
0.6, top-p 0.95, top-k 20, min-p 0, presence penalty 1.5; the score is avg@k (mean reward over k
samples per question; k = 1 is pass@1) with its standard error over questions. Answers are graded by
reward.py (short answers, multiple-choice letters) or by an LLM judge (free-form gold answers).
"""
import json
import math
import os
import random
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Optional

from tqdm import tqdm
from transformers import HfArgumentParser

from data import make_arithmetic, read_jsonl, split_gsm8k
from reformulate import with_closer
from reward import is_choice, last_boxed, route_of, score_nested

# name -> where the questions live and how to read them. `fields` maps our names to the set's own;
# `choices` is a list field (or list of fields) of options rendered "A. ..."; `route` picks the grader:
# "rule" (reward.py; free-form gold answers go to the judge), "choice" (letters), "judge" (always).
BENCHMARKS = {
    "gsm8k": dict(family="math", hub="openai/gsm8k", config="main", split="test", route="rule",
                  fields={"question": "question", "answer": "answer"}),
    "math500": dict(family="math", hub="HuggingFaceH4/MATH-500", split="test", route="rule",
                    fields={"question": "problem", "answer": "answer"}),
    "aime2025": dict(family="math", hub="MathArena/aime_2025", split="train", route="rule",
                     fields={"question": "problem", "answer": "answer"}),
    "imo_answerbench": dict(family="math", hub="Hwilner/imo-answerbench", split="train", route="rule",
                            fields={"question": "Problem", "answer": "Short Answer"}),
    "gpqa_diamond": dict(family="knowledge", hub="Idavidrein/gpqa", config="gpqa_diamond", split="train",
                         route="choice", fields={"question": "Question", "answer": "Correct Answer"},
                         choices=["Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3"],
                         shuffle=True),
    "mmlu": dict(family="knowledge", hub="cais/mmlu", config="all", split="test", route="choice",
                 fields={"question": "question", "answer": "answer"}, choices="choices"),
    "mmlu_pro": dict(family="knowledge", hub="TIGER-Lab/MMLU-Pro", split="test", route="choice",
                     fields={"question": "question", "answer": "answer"}, choices="options"),
    "mmlu_redux": dict(family="knowledge", hub="edinburgh-dawg/mmlu-redux-2.0", config="all", split="test",
                       route="choice", fields={"question": "question", "answer": "answer"}, choices="choices"),
    "ceval": dict(family="knowledge", hub="ceval/ceval-exam", config="all", split="val", route="choice",
                  fields={"question": "question", "answer": "answer"}, choices=["A", "B", "C", "D"]),
    "hle": dict(family="knowledge", hub="cais/hle", split="test", route="rule",
                fields={"question": "question", "answer": "answer"}),
    "multichallenge": dict(family="instruction", hub="ScaleAI/MultiChallenge", split="test", route="judge",
                           fields={"question": "question", "answer": "answer"}),
    "arithmetic": dict(family="math", hub=None, split="test", route="rule", fields={}),  # the demo's task
}
SAMPLING = dict(temperature=0.6, top_p=0.95, top_k=20, min_p=0.0, presence_penalty=1.5)

# Format directives that benchmarks ship inside their questions; the closer replaces all of them.
DIRECTIVES = [
    r"(?:please\s+)?(?:let'?s\s+)?think\s+step[\s-]+by[\s-]+step[.,:;!]?(?:\s*and)?",
    r"(?:please\s+)?reason\s+step\s+by\s+step[.,;]?(?:\s*and)?",
    r"(?:please\s+)?(?:put|place|write|enclose|return)\s+(?:your|the)\s+final\s+answer\s+(?:with)?in\s+\\boxed\{\}\.?",
    r"(?:please\s+)?(?:put|write)\s+your\s+(?:final\s+)?answer\s+in\s+\\boxed\{\}\.?",
    r"the\s+last\s+line\s+of\s+your\s+response\s+should\s+be\s+of\s+the\s+following\s+format:.*?(?:\n|$)",
    r"answer\s+with\s+(?:only\s+)?the\s+(?:option'?s?\s+)?letter[^.\n]*\.?",
    r"(?:your\s+)?final\s+answer\s+should\s+be\s+(?:a\s+single\s+letter|in\s+the\s+format)[^.\n]*\.?",
]
_DIRECTIVES = re.compile("|".join(f"(?:{d})" for d in DIRECTIVES), re.IGNORECASE)


def strip_directives(question):
    """The question without the benchmark's own answer-format instructions."""
    lines = []
    for line in question.split("\n"):
        kept = re.sub(r"[ \t]{2,}", " ", _DIRECTIVES.sub("", line)).strip()
        if kept or not line.strip():  # a line that held only a directive goes; blank lines stay
            lines.append(kept)
    return "\n".join(lines).strip()


def render_choices(question, options):
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    return question + "\n\n" + "\n".join(f"{letters[i]}. {o}" for i, o in enumerate(options))


def to_example(row, spec, where):
    """A raw benchmark row (hub or local JSONL, same field names) -> an example dict."""
    f = spec["fields"]
    missing = [k for k in f.values() if k not in row]
    if missing:
        raise ValueError(f"{where}: missing field(s) {missing} (has {sorted(row)})")
    question, answer = str(row[f["question"]]), row[f["answer"]]
    choices = spec.get("choices")
    if choices:
        options = [row[c] for c in choices] if isinstance(choices, list) else list(row[choices])
        options = [str(o) for o in options]
        if isinstance(choices, list) and not isinstance(answer, int) and not is_choice(str(answer)):
            correct = str(answer)  # the answer is an option's text (GPQA)
            if spec.get("shuffle"):  # fixed per question, so every run sees the same order
                random.Random(question).shuffle(options)
            answer = "ABCDEFGHIJ"[options.index(correct)]
        elif isinstance(answer, int) or str(answer).isdigit():
            answer = "ABCDEFGHIJ"[int(answer)]  # MMLU stores the index
        question = render_choices(question, options)
    if isinstance(answer, str):
        answer = split_gsm8k(answer)[1]  # GSM8K: the short answer after "####"
    return {"id": str(row.get("id", where)), "question": strip_directives(question), "answer": str(answer).strip(),
            "route": spec["route"]}


def load_benchmark(name, data_dir=None, limit=None):
    """A benchmark's examples from DATA_DIR/NAME.jsonl if present, else from the hub; errors say what was tried."""
    if name not in BENCHMARKS:
        raise KeyError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
    spec, tried = BENCHMARKS[name], []
    if name == "arithmetic":
        return [dict(ex, route="rule") for ex in make_arithmetic(limit, split="test")]
    if data_dir:
        path = os.path.join(data_dir, f"{name}.jsonl")
        if os.path.exists(path):
            return [to_example(row, spec, f"{path}:{lineno}") for lineno, row in read_jsonl(path, limit)]
        tried.append(f"{path} (not found)")
    try:
        import datasets

        rows = datasets.load_dataset(spec["hub"], spec.get("config"), split=spec["split"])
        n = len(rows) if limit is None else min(limit, len(rows))
        return [to_example(rows[i], spec, f"{spec['hub']}[{i}]") for i in range(n)]
    except Exception as e:  # no network, no `datasets`, a renamed set: report and let the others run
        tried.append(f"hub {spec['hub']} ({type(e).__name__}: {str(e)[:200]})")
    raise RuntimeError(f"benchmark {name!r} could not be loaded; tried: " + "; ".join(tried))


# ---------------------------------------------------------------------------------------------------------
# scoring


def mean_stderr(values):
    n = len(values)
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    return mean, math.sqrt(var / n)


def evaluate(engine, examples, samples=1, max_new_tokens=1024, judge=None, desc=None, chunk=512, **sampling):
    """avg@k of `engine` on `examples`, questions sent to the engine in batches of `chunk`."""
    sampling = {**SAMPLING, **sampling}
    prompts = [with_closer(ex["question"]) for ex in examples]
    groups = []
    for start in tqdm(range(0, len(prompts), chunk), desc=desc or "eval", disable=desc is None):
        groups += engine.generate(prompts[start:start + chunk], n=samples, max_new_tokens=max_new_tokens, **sampling)
    scores = score_nested([[r.text for r in g] for g in groups], examples, judge)
    per_question = [sum(s) / samples for s in scores]
    accuracy, stderr = mean_stderr(per_question)
    records = [{"id": ex["id"], "answer": ex["answer"], "response": r.text, "extracted": last_boxed(r.text),
                "route": route_of(ex), "correct": bool(s)}
               for ex, g, ss in zip(examples, groups, scores) for r, s in zip(g, ss)]
    return {"accuracy": accuracy, "stderr": stderr, "questions": len(examples), "samples": samples, "records": records}


def run_benchmarks(engine, names, samples=1, max_new_tokens=1024, judge=None, data_dir=None, limit=None,
                   log=print, **sampling):
    """Every named benchmark (a failing one is reported and skipped), plus per-family macro averages."""
    results, errors = {}, {}
    for name in names:
        try:
            examples = load_benchmark(name, data_dir, limit)
        except Exception as e:
            errors[name] = str(e)
            log(f"[skip] {e}")
            continue
        start = time.time()
        res = evaluate(engine, examples, samples, max_new_tokens, judge, desc=f"{name} ({len(examples)} x {samples})",
                       **sampling)
        results[name] = dict(res, family=BENCHMARKS[name]["family"], seconds=time.time() - start)
    families = {}
    for name, res in results.items():
        families.setdefault(res["family"], []).append(res["accuracy"])
    macro = {fam: sum(accs) / len(accs) for fam, accs in families.items()}
    return {"benchmarks": results, "macro": macro, "errors": errors}


def markdown_table(summary):
    lines = ["| benchmark | family | accuracy (%) | ± s.e. | questions x k | seconds |", "| --- | --- | --- | --- | --- | --- |"]
    for name, r in summary["benchmarks"].items():
        lines.append(f"| {name} | {r['family']} | {100 * r['accuracy']:.1f} | {100 * r['stderr']:.1f} | "
                     f"{r['questions']} x {r['samples']} | {r['seconds']:.0f} |")
    for fam, acc in summary["macro"].items():
        lines.append(f"| **{fam} (macro)** | {fam} | {100 * acc:.1f} | | | |")
    for name, err in summary["errors"].items():
        lines.append(f"| {name} | failed | | | | |")
    return "\n".join(lines)


@dataclass
class EvalConfig:
    model: str = field(metadata={"help": "model directory, hub id, bare Qwen name or .gguf file"})
    benchmarks: str = field(default="gsm8k", metadata={"help": f"comma-separated, from: {', '.join(BENCHMARKS)}"})
    data_dir: Optional[str] = field(default=None, metadata={"help": "folder of NAME.jsonl files, tried before the hub"})
    limit: Optional[int] = field(default=None, metadata={"help": "evaluate the first N questions of each benchmark"})
    samples: int = field(default=1, metadata={"help": "k samples per question (avg@k)"})
    max_new_tokens: int = field(default=12_288, metadata={"help": "response cap (paper: 12,288)"})
    judge: Optional[str] = field(default=None, metadata={"help": "judge model for free-form answers (train.py: the teacher)"})
    judge_url: Optional[str] = field(default=None, metadata={"help": "OpenAI-compatible server serving --judge"})
    batch_size: int = field(default=64, metadata={"help": "sequences per generate call"})
    seed: int = field(default=0, metadata={"help": "sampling seed"})
    out: Optional[str] = field(default=None, metadata={"help": "summary JSON here"})
    responses: Optional[str] = field(default=None, metadata={"help": "every response, extracted answer and verdict (JSONL)"})


def main(cfg):
    import torch

    from rollout import TransformersEngine, frozen_engine, load_model

    torch.manual_seed(cfg.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, tokenizer = load_model(cfg.model, device=device)
    engine = TransformersEngine(model.eval(), tokenizer, max_batch_size=cfg.batch_size)
    judge = frozen_engine(cfg.judge, cfg.judge_url, device=device, batch_size=cfg.batch_size)
    names = [n.strip() for n in cfg.benchmarks.split(",") if n.strip()]
    summary = run_benchmarks(engine, names, cfg.samples, cfg.max_new_tokens, judge, cfg.data_dir, cfg.limit)
    print(markdown_table(summary))
    if cfg.responses:
        with open(cfg.responses, "w") as f:
            for name, r in summary["benchmarks"].items():
                f.writelines(json.dumps({"benchmark": name, **rec}) + "\n" for rec in r["records"])
    if cfg.out:
        slim = {name: {k: v for k, v in r.items() if k != "records"} for name, r in summary["benchmarks"].items()}
        with open(cfg.out, "w") as f:
            json.dump({"config": asdict(cfg), "benchmarks": slim, "macro": summary["macro"],
                       "errors": summary["errors"]}, f, indent=1)
    return summary


if __name__ == "__main__":
    main(HfArgumentParser(EvalConfig).parse_args_into_dataclasses()[0])
