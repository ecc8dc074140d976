"""Benchmark evaluation, as the paper scores it (its appendix B.2 and the project's EVAL.md; README "Evaluation").

    python eval.py --model runs/demo/zppo/checkpoints/step_000010 --benchmarks arithmetic
    python eval.py --model Qwen3.5-0.8B --benchmarks aime2025,mmlu_redux,hle --judge Qwen3.5-27B --out results.json
    python eval.py --model M --benchmarks gsm8k --data-dir benchmarks/   # offline: benchmarks/gsm8k.jsonl

Protocol: each benchmark's own format directives ("Think step by step", "put your final answer within
\\boxed{}", ...) are stripped and only the spec's closer is appended; every sampling field is set
(SAMPLING: temperature 0.6, top-p 0.95, top-k 20, min-p 0, presence penalty 1.5); the score is avg@k
(mean reward over k samples per question; k = 1 is pass@1) with its standard error over questions.
Each benchmark is scored by its protocol in the paper's Tables 5-7 (`protocol` in BENCHMARKS):
  Exact+Judge  reward.py: the rule grader first; every response it cannot resolve (free-form gold, no
               parseable box, truncated) goes to the judge with the paper's prompt and the full response.
  Rule+Judge   a benchmark-specific parser first (MathVista's choices, ...), then the judge, as Exact+Judge.
  Det.         the benchmark's own deterministic metric, no judge: InfographicVQA's ANLS, OCRBench v2's scorer
               per task type (benchmarks.py).
  BenchJudge   the benchmark's official judge: MultiChallenge's YES/NO verifier, HLE's CAIS judge, MM-Vet's 0-1
               grader, CharXiv's reasoning/descriptive graders, MMVU's judge (benchmarks.py; prompts verbatim in
               bench_prompts.py).
Image rows go to a vision-language student with their images, video rows with frames sampled from the file
(video.py; --video-fps, --video-max-frames, --video-dir); `--list` prints every benchmark with its family,
source and protocol.
Without a judge, responses that need one score 0 and are counted as `unresolved`. Each benchmark is loaded
and evaluated on its own: one that fails is reported and the others still run; --out is rewritten after
every benchmark, and the process exits non-zero when a requested benchmark failed or is unknown.
"""
import ast
import importlib.util
import json
import math
import os
import random
import re
import sys
import time
import traceback
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Optional

import jinja2
from tqdm import tqdm
from transformers import HfArgumentParser

import benchmarks
from data import make_arithmetic, read_jsonl, split_gsm8k
from reformulate import user_prompt, with_closer
from reward import (JUDGE_MAX_NEW_TOKENS, JUDGE_SAMPLING, after_thinking, clip_start, grade, is_choice, last_boxed,
                    score_detailed, verdict_of)

# ---------------------------------------------------------------------------------------------------------
# the benchmarks

AIME2025_CONFIGS = ["AIME2025-I", "AIME2025-II"]
# The 57 MMLU subjects, as mmlu-redux-2.0 names its configs (there is no combined config). The names are
# those of the set's card; lm-evaluation-harness (tasks/mmlu-redux) and evalscope (benchmarks/mmlu_redux)
# load mirrors of the set by the same 57 names. Not loaded from the hub here (no network).
MMLU_REDUX_SUBJECTS = [
    "abstract_algebra", "anatomy", "astronomy", "business_ethics", "clinical_knowledge", "college_biology",
    "college_chemistry", "college_computer_science", "college_mathematics", "college_medicine", "college_physics",
    "computer_security", "conceptual_physics", "econometrics", "electrical_engineering", "elementary_mathematics",
    "formal_logic", "global_facts", "high_school_biology", "high_school_chemistry", "high_school_computer_science",
    "high_school_european_history", "high_school_geography", "high_school_government_and_politics",
    "high_school_macroeconomics", "high_school_mathematics", "high_school_microeconomics", "high_school_physics",
    "high_school_psychology", "high_school_statistics", "high_school_us_history", "high_school_world_history",
    "human_aging", "human_sexuality", "international_law", "jurisprudence", "logical_fallacies", "machine_learning",
    "management", "marketing", "medical_genetics", "miscellaneous", "moral_disputes", "moral_scenarios", "nutrition",
    "philosophy", "prehistory", "professional_accounting", "professional_law", "professional_medicine",
    "professional_psychology", "public_relations", "security_studies", "sociology", "us_foreign_policy", "virology",
    "world_religions",
]
# The 52 C-Eval subjects, the configs of ceval/ceval-exam (no combined config), as its card lists them and
# as lm-evaluation-harness (tasks/ceval, which loads ceval/ceval-exam itself) names them. Not loaded here.
CEVAL_SUBJECTS = [
    "computer_network", "operating_system", "computer_architecture", "college_programming", "college_physics",
    "college_chemistry", "advanced_mathematics", "probability_and_statistics", "discrete_mathematics",
    "electrical_engineer", "metrology_engineer", "high_school_mathematics", "high_school_physics",
    "high_school_chemistry", "high_school_biology", "middle_school_mathematics", "middle_school_biology",
    "middle_school_physics", "middle_school_chemistry", "veterinary_medicine", "college_economics",
    "business_administration", "marxism", "mao_zedong_thought", "education_science", "teacher_qualification",
    "high_school_politics", "high_school_geography", "middle_school_politics", "middle_school_geography",
    "modern_chinese_history", "ideological_and_moral_cultivation", "logic", "law", "chinese_language_and_literature",
    "art_studies", "professional_tour_guide", "legal_professional", "high_school_chinese", "high_school_history",
    "middle_school_history", "civil_servant", "sports_science", "plant_protection", "basic_medicine",
    "clinical_medicine", "urban_and_rural_planner", "accountant", "fire_engineer",
    "environmental_impact_assessment_engineer", "tax_accountant", "physician",
]
GPQA_OPTIONS = ["Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3"]
MMMU_PRO_CONFIGS = ["standard (10 options)", "standard (4 options)", "vision"]
MMMU_PRO_IMAGES = [f"image_{i}" for i in range(1, 8)]

# name -> where the questions live and how to score them. hub with `config` (one) or `configs` (loaded one by
# one and concatenated); `fields` maps our names to the set's own columns (all required); `id` names the row id
# column (optional); `choices` is a list column (or list of columns) of options rendered "A. ...", the gold
# answer being an option's index, letter or text (`answer_is`); `route`:
# "rule" (Exact+Judge on short answers), "choice" (Exact+Judge on letters), "multichallenge" / "hle"
# (BenchJudge); `images`: the image columns (a file path, relative to a local file, or the hub's image): a row
# with an image goes to a vision-language student with it, and is skipped and counted for a text-only one;
# `optional`: our fields a config may lack (MMMU-Pro's vision config has the question inside the image);
# `options_text`: a column of option text appended to the question as it is (WeMath).
# Family "llm" is the paper's 10 LLM benchmarks (Table 6): their unweighted mean is its LLM average. The
# project's own extras are family "math", so they never enter that average.
BENCHMARKS = {
    "aime2025": dict(family="llm", protocol="Exact+Judge", hub="opencompass/AIME2025", configs=AIME2025_CONFIGS,
                     split="test", route="rule", fields={"question": "question", "answer": "answer"}),
    "aime2026": dict(family="llm", protocol="Exact+Judge", hub="MathArena/aime_2026", split="train", route="rule",
                     fields={"question": "problem", "answer": "answer"}, id="problem_idx"),
    "ceval": dict(family="llm", protocol="Exact+Judge", hub="ceval/ceval-exam", configs=CEVAL_SUBJECTS, split="val",
                  route="choice", fields={"question": "question", "answer": "answer"}, choices=["A", "B", "C", "D"],
                  answer_is="letter", id="id"),
    "gpqa_diamond": dict(family="llm", protocol="Exact+Judge", hub="Idavidrein/gpqa", config="gpqa_diamond",
                         split="train", route="choice", fields={"question": "Question", "answer": "Correct Answer"},
                         choices=GPQA_OPTIONS, answer_is="text", shuffle=True, id="Record ID"),
    "hle": dict(family="llm", protocol="BenchJudge", hub="cais/hle", split="test", route="hle",
                fields={"question": "question", "answer": "answer"}, id="id", images=["image"]),
    "imo_answerbench": dict(family="llm", protocol="Exact+Judge", hub="OpenEvals/IMO-AnswerBench", split="train",
                            route="rule", fields={"question": "Problem", "answer": "Short Answer"}, id="Problem ID"),
    "mmlu": dict(family="llm", protocol="Exact+Judge", hub="cais/mmlu", config="all", split="test", route="choice",
                 fields={"question": "question", "answer": "answer"}, choices="choices", answer_is="index"),
    "mmlu_pro": dict(family="llm", protocol="Exact+Judge", hub="TIGER-Lab/MMLU-Pro", split="test", route="choice",
                     fields={"question": "question", "answer": "answer"}, choices="options", answer_is="letter",
                     id="question_id"),
    "mmlu_redux": dict(family="llm", protocol="Exact+Judge", hub="edinburgh-dawg/mmlu-redux-2.0",
                       configs=MMLU_REDUX_SUBJECTS, split="test", route="choice",
                       fields={"question": "question", "answer": "answer", "error_type": "error_type"},
                       choices="choices", answer_is="index"),
    "multichallenge": dict(family="llm", protocol="BenchJudge", hub="ScaleAI/MultiChallenge", split="test",
                           route="multichallenge", id="question_id",
                           fields={"conversation": "conversation", "target_question": "target_question",
                                   "answer": "pass_criteria"}),
    # the paper's VLM benchmarks that the Exact+Judge / Rule+Judge routes score (columns from the sets' cards)
    "mathvista": dict(family="vlm", protocol="Rule+Judge", hub="AI4Math/MathVista", split="testmini", route="rule",
                      fields={"question": "question", "answer": "answer"}, choices="choices", answer_is="text",
                      choices_optional=True, images=["decoded_image"], id="pid"),
    "mathverse": dict(family="vlm", protocol="Exact+Judge", hub="CaraJ/MathVerse-lmmseval", config="testmini",
                      split="testmini", route="rule", fields={"question": "question", "answer": "answer"},
                      images=["image"], id="sample_index"),
    "mathvision": dict(family="vlm", protocol="Exact+Judge", hub="MathLLMs/MathVision", split="test", route="rule",
                       fields={"question": "question", "answer": "answer"}, choices="options", answer_is="letter",
                       choices_optional=True, images=["decoded_image"], id="id"),
    "ai2d": dict(family="vlm", protocol="Exact+Judge", hub="lmms-lab/ai2d", split="test", route="choice",
                 fields={"question": "question", "answer": "answer"}, choices="options", answer_is="index",
                 images=["image"]),
    "wemath": dict(family="vlm", protocol="Exact+Judge", hub="We-Math/We-Math", split="testmini", route="choice",
                   fields={"question": "question", "answer": "answer"}, options_text="option", images=["image"],
                   id="ID"),
    "mmmu_pro": dict(family="vlm", protocol="Exact+Judge", hub="MMMU/MMMU_Pro", configs=MMMU_PRO_CONFIGS,
                     split="test", route="choice", fields={"question": "question", "answer": "answer"},
                     optional=["question"], choices="options", answer_is="letter", images=["image", *MMMU_PRO_IMAGES],
                     id="id"),
    # not in the paper
    "gsm8k": dict(family="math", protocol="Exact+Judge", hub="openai/gsm8k", config="main", split="test",
                  route="rule", fields={"question": "question", "answer": "answer"}),
    "math500": dict(family="math", protocol="Exact+Judge", hub="HuggingFaceH4/MATH-500", split="test", route="rule",
                    fields={"question": "problem", "answer": "answer"}, id="unique_id"),
    "arithmetic": dict(family="math", protocol="Exact+Judge", hub=None, split="test", route="rule", fields={}),
}
# the other VLM benchmarks of the paper (and CharXiv's descriptive questions), defined in benchmarks.py
BENCHMARKS.update(benchmarks.SPECS)
# The paper's decoding for every benchmark, each field explicit so no engine or checkpoint default applies
# (the engines also keep a checkpoint's generation_config.json out of sampling: rollout.py).
SAMPLING = dict(temperature=0.6, top_p=0.95, top_k=20, min_p=0.0, presence_penalty=1.5, repetition_penalty=1.0)
# MMLU-Redux rows the reference evaluators score differently: lm-evaluation-harness keeps only the rows
# annotated "ok" (its mmlu-redux-2.0-ok mirror); evalscope scores every row, re-targeted by correct_answer.
REDUX_ROWS = ("ok", "corrected")

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
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def strip_directives(question):
    """The question without the benchmark's own answer-format instructions."""
    lines = []
    for line in question.split("\n"):
        kept = re.sub(r"[ \t]{2,}", " ", _DIRECTIVES.sub("", line)).strip()
        if kept or not line.strip():  # a line that held only a directive goes; blank lines stay
            lines.append(kept)
    return "\n".join(lines).strip()


def render_choices(options):
    return "\n".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(options))


def _column(row, name):
    """row[name]; MultiChallenge's own JSONL spells its columns in capitals (QUESTION_ID, ...): those count too."""
    return row[name] if name in row else row.get(name.upper())


def _letter_of(answer, options, answer_is):
    """The gold option's letter from an index (MMLU: an int 0-3), a letter (MMLU-Pro, C-Eval) or the option's
    text (GPQA); None for anything else (an unknown answer format: the row is skipped and counted)."""
    text = str(answer).strip()
    if answer_is == "index" and not isinstance(answer, bool) and text.isdigit():
        index = int(text)
    elif answer_is == "letter" and is_choice(text):
        index = LETTERS.index(text.strip("()").upper())
    elif answer_is == "text" and str(answer) in options:
        index = options.index(str(answer))
    else:
        return None
    return LETTERS[index] if index < len(options) else None


def _redux_target(row, options, redux_rows):
    """(options, gold index) of an MMLU-Redux row under --mmlu-redux-rows, or (None, skip reason). "ok" keeps
    only rows annotated ok; "corrected" follows evalscope: wrong_groundtruth takes correct_answer (an index or a
    letter), no_correct_answer puts correct_answer in place of the marked option, rows with several right
    options are skipped (one letter is graded here), other annotations keep the original answer."""
    error_type, answer = str(row["error_type"]).strip(), row["answer"]
    if error_type == "ok":
        return options, answer
    if redux_rows == "ok":
        return None, f"error_type={error_type}"
    fix = str(row.get("correct_answer") or "").strip()
    if error_type == "wrong_groundtruth":
        index = int(fix) if fix.isdigit() else LETTERS.index(fix.upper()) if re.fullmatch("[A-Za-z]", fix) else None
        if index is None or index >= len(options):
            return None, f"error_type={error_type} (no usable fix)"
        return options, index
    if error_type == "no_correct_answer":
        if not fix or _letter_of(answer, options, "index") is None:
            return None, f"error_type={error_type} (no usable fix)"
        options = list(options)
        options[int(answer)] = fix
        return options, answer
    if error_type == "multiple_correct_answers":
        return None, f"error_type={error_type}"
    return options, answer


def _conversation(value, where):
    """MultiChallenge's conversation as chat messages. `datasets` may hand a list-of-structs column over as
    {"role": [...], "content": [...]}; both shapes are accepted."""
    if isinstance(value, dict) and isinstance(value.get("role"), list):
        value = [{"role": r, "content": c} for r, c in zip(value["role"], value["content"])]
    if not (isinstance(value, list) and value and all(isinstance(m, dict) and {"role", "content"} <= set(m)
                                                      for m in value)):
        raise ValueError(f"{where}: 'conversation' must be a non-empty list of {{role, content}} messages")
    return [{"role": str(m["role"]), "content": str(m["content"])} for m in value]


def row_images(row, spec, where, base, name):
    """The row's images as file paths: a path (relative to the local file), a hub image (written once to a
    file, as training data's are) or a data URL (HLE); empty columns are skipped."""
    from data import check_images, save_hub_images

    paths = []
    for k, column in enumerate(spec.get("images", [])):
        value = row.get(column)
        if value is None or value == "":
            continue
        if isinstance(value, str) and value.startswith("data:image"):
            import base64
            import io

            from PIL import Image
            value = Image.open(io.BytesIO(base64.b64decode(value.split(",", 1)[1])))
        if isinstance(value, str):
            paths += check_images(value, where, base)
        else:
            paths += save_hub_images({"image": value}, name, where.replace("/", "_"), k)["image"]
    return paths


def to_example(row, spec, where, config=None, redux_rows="ok", vision=False, base="", name="bench", video=None):
    """A raw benchmark row (hub or local JSONL, the hub's columns) -> (example, None), or (None, why skipped)
    for a row this student or grader cannot take (an image, an unknown answer format, an MMLU-Redux row left
    out by --mmlu-redux-rows). A row without the set's columns is an error naming `where`."""
    if not isinstance(row, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(row).__name__}")
    optional = [spec["fields"][k] for k in spec.get("optional", [])]
    missing = [c for c in spec["fields"].values() if c not in row and c.upper() not in row and c not in optional]
    if missing:
        raise ValueError(f"{where}: missing field(s) {missing} (has {sorted(row)})")
    get = {ours: _column(row, theirs) for ours, theirs in spec["fields"].items()}
    has_image = any(row.get(c) not in (None, "") for c in spec.get("images", []))
    if has_image and not vision:  # a text-only student cannot see the question
        return None, "image"
    if spec.get("video") and not vision:
        return None, "video"
    row_id = _column(row, spec["id"]) if spec.get("id") else None
    row_id = where if row_id is None else f"{config}:{row_id}" if config else str(row_id)
    example = {"id": row_id, "route": spec["route"]}
    if spec.get("convert"):  # benchmarks.py: the set's own fields -> question, answer, route (or why skipped)
        got = spec["convert"](dict(row, config=config) if config and "config" not in row else row, spec, where)
        if isinstance(got, str):
            return None, got
        if "video_file" in got:  # a video benchmark: the clip's frames sampled and cached (video.py)
            from video import VideoError
            try:
                got = benchmarks.attach_video(got, spec, where, base, video or {})
            except VideoError as e:  # an unreadable video costs its row, counted
                return None, "video: " + ("not found" if "not found" in str(e) or "not downloadable" in str(e)
                                          else "undecodable")
        return _converted(example, got, row, spec, where, base, name, has_image, get), None
    if has_image:
        example["images"] = row_images(row, spec, where, base, name)
    if spec["route"] == "multichallenge":
        messages = _conversation(get["conversation"], where)
        verdict = str(get["answer"]).strip().upper()
        if verdict not in ("YES", "NO"):
            return None, "answer_format"
        last_user = [m["content"] for m in messages if m["role"] == "user"]
        return dict(example, question=last_user[-1] if last_user else "", messages=messages, answer=verdict,
                    target_question=str(get["target_question"])), None
    stem, answer = strip_directives(str(get["question"] or "")), get["answer"]
    if spec.get("options_text"):
        stem = f"{stem}\n\n{row.get(spec['options_text']) or ''}".strip()
    choices = spec.get("choices")
    listed = row.get(choices) if isinstance(choices, str) else None
    if isinstance(listed, str) and listed.strip().startswith("["):  # MMMU-Pro stores its options as a list's text
        listed = ast.literal_eval(listed)
    if choices and (listed or not spec.get("choices_optional")):
        if isinstance(choices, list) and any(c not in row for c in choices):  # GPQA's option columns
            raise ValueError(f"{where}: missing field(s) {[c for c in choices if c not in row]} (has {sorted(row)})")
        options = [str(row[c]) for c in choices] if isinstance(choices, list) else [str(o) for o in listed]
        if "error_type" in get:
            options, answer = _redux_target(row, options, redux_rows)
            if options is None:
                return None, answer
        if spec.get("shuffle"):  # GPQA: fixed per question, so every run sees the same order
            random.Random(str(get["question"])).shuffle(options)
        answer = _letter_of(answer, options, spec["answer_is"])
        if answer is None:
            return None, "answer_format"
        return dict(example, question=stem + "\n\n" + render_choices(options), stem=stem,
                    options=render_choices(options), answer=answer), None
    if isinstance(answer, bool) or not isinstance(answer, (str, int, float)) or not str(answer).strip():
        return None, "answer_format"
    if isinstance(answer, str):
        answer = split_gsm8k(answer)[1]  # GSM8K: the short answer after "####"
    return dict(example, question=stem, answer=str(answer).strip()), None


def _converted(example, got, row, spec, where, base, name, has_image, get):
    """A converter's fields made an example: its suffix on the id, its options lettered (an index gold answer),
    its question without the benchmark's format directives, the row's images."""
    got = dict(got)
    if "id_suffix" in got:
        example["id"] = f"{example['id']}:{got.pop('id_suffix')}"
    if has_image:
        example["images"] = row_images(row, spec, where, base, name)
    if "choices" in got:
        options = got.pop("choices")
        stem = strip_directives(str(got.pop("question", None) or get.get("question") or ""))
        got.update(stem=stem, question=stem + "\n\n" + render_choices(options), options=render_choices(options),
                   answer=LETTERS[got.pop("letter_index")])
    else:
        got["question"] = strip_directives(got["question"] if "question" in got else str(get.get("question") or ""))
    return dict(example, **got)


def hub_rows(spec):
    """(where, config, row) over the hub set, its configs loaded one at a time (a --limit may stop early)."""
    import datasets

    for config in spec.get("configs") or [spec.get("config")]:
        for split in spec.get("splits") or [spec["split"]]:  # DynaMath: one split per variant
            try:
                rows = datasets.load_dataset(spec["hub"], config, split=split)
            except Exception as e:
                reason = f"{type(e).__name__}: {str(e)[:200]}"
                raise RuntimeError(f"config {config}, split {split}: {reason}") from None
            label = config if not spec.get("splits") else f"{config}:{split}" if config else split
            for i in range(len(rows)):
                yield f"{spec['hub']}[{config}][{split}][{i}]", label, dict(rows[i])


def _convert(rows, spec, limit, redux_rows, vision=False, base="", name="bench", video=None):
    examples, skipped = [], Counter()
    for where, config, row in rows:
        if limit is not None and len(examples) >= limit:
            break
        # CharXiv's descriptive questions: one hub row holds four
        for where, row in (spec["expand"](row, where) if spec.get("expand") and isinstance(row, dict)
                           else [(where, row)]):
            if limit is not None and len(examples) >= limit:
                break
            example, reason = to_example(row, spec, where, config, redux_rows, vision, base, name, video)
            if example is None:
                skipped[reason] += 1
            else:
                examples.append(example)
    return examples, dict(skipped)


def load_benchmark(name, data_dir=None, limit=None, redux_rows="ok", vision=False, video=None):
    """(examples, skipped rows by reason) from DATA_DIR/NAME.jsonl if present, else from the hub (per-config
    sets loaded config by config and concatenated); errors say what was tried. Rows of a local file are shaped
    as the hub serves them; for a multi-config set an optional `config` field names each row's subject."""
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
    if redux_rows not in REDUX_ROWS:
        raise ValueError(f"redux_rows must be one of {REDUX_ROWS}, got {redux_rows!r}")
    spec, tried = BENCHMARKS[name], []
    if name == "arithmetic":
        return [dict(ex, route="rule") for ex in make_arithmetic(limit, split="test")], {}
    if data_dir:
        path = os.path.join(data_dir, f"{name}.jsonl")
        if os.path.exists(path):
            rows = ((f"{path}:{lineno}", row.get("config") if isinstance(row, dict) else None, row)
                    for lineno, row in read_jsonl(path))
            return _convert(rows, spec, limit, redux_rows, vision, os.path.dirname(os.path.abspath(path)), name, video)
        tried.append(f"{path} (not found)")
    try:
        return _convert(hub_rows(spec), spec, limit, redux_rows, vision, "", name, video)
    except Exception as e:  # no network, no `datasets`, a renamed set: report and let the others run
        tried.append(f"hub {spec['hub']} ({type(e).__name__}: {str(e)[:300]})")
    raise RuntimeError(f"benchmark {name!r} could not be loaded; tried: " + "; ".join(tried))


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

Print your reasoning followed by your verdict, either "YES" or "NO"."""

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
    """"YES" or "NO" from a MultiChallenge judge reply: a {"reasoning", "verdict"} JSON object (upstream's schema)
    or, as the prompt asks, reasoning followed by the verdict: the last standalone upper-case YES or NO (lower
    case is prose: "there is no ..."); None when there is neither."""
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
    """The CAIS judge's four fields as one JSON object (a think block before it is allowed; `strict`, a field of
    upstream's schema, may be present); None for anything else, which scores 0."""
    try:
        obj = json.loads(after_thinking(reply))
    except (ValueError, RecursionError):
        return None
    if not (isinstance(obj, dict) and HLE_KEYS <= set(obj) <= HLE_KEYS | {"strict"}
            and obj["correct"] in ("yes", "no")):
        return None
    return {"score": float(obj["correct"] == "yes"), "extracted": str(obj["extracted_final_answer"]),
            "confidence": obj["confidence"]}


BENCH_JUDGES = {"multichallenge": (multichallenge_prompt, parse_multichallenge), "hle": (hle_prompt, parse_hle)}
BENCH_JUDGES.update(benchmarks.JUDGES)  # MM-Vet, CharXiv (reasoning, descriptive), MMVU
DET_SCORERS = benchmarks.DET_SCORERS  # route -> score(response, example): ANLS, OCRBench v2


def bench_judge_scores(judge, items, make_prompt, parse):
    """(example, Rollout) items -> per item score/via/judge reply, one judge batch, the paper's judge decoding.
    Without a judge every item is unresolved (0); a reply the parser cannot read scores 0 (malformed)."""
    if not items:
        return []
    if judge is None:
        return [{"score": 0.0, "via": "unresolved"} for _ in items]
    outs = judge.generate([make_prompt(ex, r.text) for ex, r in items], n=1, max_new_tokens=JUDGE_MAX_NEW_TOKENS,
                          **JUDGE_SAMPLING)
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
    """Mean and standard error of the mean; (nan, nan) for no values (the caller reports why there are none)."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    return mean, math.sqrt(var / n)


def student_prompt(example, multichallenge_closer=True):
    """The question with the closer, after its images when it has some. A MultiChallenge conversation goes as the
    chat it is, the closer after its last user turn: the paper's "single shared RL closer" for every benchmark
    (its judge reads the reply after </think>, box included). multichallenge_closer=False sends the chat untouched
    (our option: a demanded \\boxed{} changes what the user asked for)."""
    if "messages" not in example:
        return user_prompt(example, with_closer(example["question"]))
    chat = [dict(m) for m in example["messages"]]
    last = max((i for i, m in enumerate(chat) if m["role"] == "user"), default=None)
    if multichallenge_closer and last is not None:
        chat[last]["content"] = with_closer(chat[last]["content"])
    return chat


def score_groups(groups, examples, judge):
    """Per response (nested like `groups`) a dict: score, via (rule / judge / unresolved), the judge's reply.
    Exact+Judge rows go through reward.score_detailed with truncation marked; BenchJudge rows to their judge."""
    flat = [(ex, r) for ex, g in zip(examples, groups) for r in g]
    verdicts = [None] * len(flat)
    exact = [i for i, (ex, _) in enumerate(flat) if ex.get("route") not in BENCH_JUDGES and ex.get("route") not in
             DET_SCORERS]
    for i, (ex, r) in enumerate(flat):  # Det.: the benchmark's own metric, no judge
        if ex.get("route") in DET_SCORERS:
            verdicts[i] = {"score": DET_SCORERS[ex["route"]](r.text, ex), "via": "det"}
    details = score_detailed([(flat[i][0], flat[i][1].text) for i in exact], judge, grade,
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
        groups += engine.generate(prompts[start:start + chunk], n=samples, max_new_tokens=max_new_tokens, **sampling)
    verdicts = score_groups(groups, examples, judge)
    per_question = [sum(v["score"] for v in vs) / samples for vs in verdicts]
    accuracy, stderr = mean_stderr(per_question)
    records = []
    for ex, g, vs in zip(examples, groups, verdicts):
        for r, v in zip(g, vs):
            extracted = v["judge"].get("extracted") if "judge" in v else \
                benchmarks.final_answer(r.text) if v["via"] == "det" else last_boxed(r.text)
            records.append({"id": ex["id"], "answer": ex["answer"], "response": r.text, "extracted": extracted,
                            "route": ex.get("route", "rule"), "scored_by": v["via"], "correct": bool(v["score"]),
                            "score": v["score"],
                            "truncated": r.finish_reason == "length", "judge_failed": v.get("judge_failed", False),
                            **({"judge_reply": v["judge_reply"]} if "judge_reply" in v else {}),
                            **({"judge_fields": v["judge"]} if "judge" in v else {})})
    via = Counter(v["via"] for vs in verdicts for v in vs)
    return {"accuracy": accuracy, "stderr": stderr, "questions": len(examples), "samples": samples,
            "judged": via["judge"], "unresolved": via["unresolved"],
            "judge_malformed": sum(v.get("malformed", False) for vs in verdicts for v in vs),
            "judge_failed": sum(v.get("judge_failed", False) for vs in verdicts for v in vs), "records": records}


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
    for name, res in results.items():
        families.setdefault(res["family"], []).append(res["accuracy"])
    macro = {fam: sum(accs) / len(accs) for fam, accs in families.items()}
    # a paper family averaged over fewer benchmarks than its table is not the table's average: name the absent
    missing = {fam: [n for n in names if n not in results] for fam, names in paper_families().items()
               if fam in families and any(n not in results for n in names)}
    return {"benchmarks": results, "macro": macro, "macro_over": {f: len(a) for f, a in families.items()},
            "macro_missing": missing, "errors": errors}


PAPER_FAMILIES = {"vlm": 16, "llm": 10, "video": 5}  # the paper's Tables 5-7: benchmarks per family


def paper_families():
    """The paper's families and their benchmarks, as the registry defines them."""
    return {fam: [n for n, s in BENCHMARKS.items() if s["family"] == fam] for fam in PAPER_FAMILIES}


def source_of(spec):
    """Where a benchmark's rows come from, as --list prints it."""
    if spec["hub"] is None:
        return "generated"
    configs = spec.get("configs")
    where = f" ({len(configs)} configs)" if configs else f" config {spec['config']}" if spec.get("config") else ""
    splits = spec.get("splits")
    split = f"splits {splits[0]}..{splits[-1]}" if splits else f"split {spec['split']}"
    return f"{spec['hub']}{where}, {split}"


def list_table():
    """Every benchmark with its family, source and protocol (the paper's families first)."""
    order = sorted(BENCHMARKS, key=lambda n: (list(PAPER_FAMILIES) + ["math", "extra"]).index(BENCHMARKS[n]["family"]))
    lines = ["| benchmark | family | source | protocol |", "| --- | --- | --- | --- |"]
    lines += [f"| {n} | {BENCHMARKS[n]['family']} | {source_of(BENCHMARKS[n])} | {BENCHMARKS[n]['protocol']} |"
              for n in order]
    counts = ", ".join(f"{fam} {len(names)}" for fam, names in paper_families().items())
    return "\n".join(lines + [f"paper families: {counts}; math and extra are not in the paper's averages"])


def run_benchmarks(engine, names, samples=1, max_new_tokens=1024, judge=None, data_dir=None, limit=None,
                   log=print, redux_rows="ok", on_update=None, video=None, multichallenge_closer=True, **sampling):
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
                log(f"[warning] {name}: no judge model; every response is unresolved and scores 0 (see --judge)")
            desc = f"{name} ({len(examples)} x {samples})"
            res = evaluate(engine, examples, samples, max_new_tokens, judge, desc=desc,
                           multichallenge_closer=multichallenge_closer, **sampling)
            if spec.get("aggregate"):  # upstream's headline number is not the mean over questions (OCRBench v2)
                headline, extra = spec["aggregate"](examples, res["records"])
                res = dict(res, accuracy=headline, question_mean=res["accuracy"], **extra)
            results[name] = dict(res, family=spec["family"], protocol=spec["protocol"], skipped=skipped,
                                 seconds=time.time() - start)
            if res["judge_failed"]:  # the score counts them as wrong: say so, it is no measurement of the model
                log(f"[warning] {name}: {res['judge_failed']} of {res['judged']} judge calls failed (no reply): scored "
                    "0, so the score is only a lower bound; check the judge (--judge-url, --judge-timeout, "
                    "--judge-retries)")
        except Exception as e:  # one benchmark's failure never costs the others
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
                     f"| {100 * r['stderr']:.1f} | {r['questions']} x {r['samples']} | {skipped}{why} | {r['judged']} "
                     f"| {r['unresolved']} | {r['seconds']:.0f} |")
    for fam, acc in summary["macro"].items():
        lines.append(f"| **{fam} (macro)** | {fam} | mean of {summary['macro_over'][fam]} | {100 * acc:.1f} "
                     "| | | | | | |")
    for name in summary["errors"]:
        lines.append(f"| {name} | failed | | | | | | | | |")
    for fam, absent in summary.get("macro_missing", {}).items():
        total = len(paper_families()[fam])
        lines.append(f"{fam} macro is over {total - len(absent)} of the paper's {total}; missing: {', '.join(absent)}")
    lines += [f"failed: {name}: {err}" for name, err in summary["errors"].items()]
    lines += [f"judge failed: {name}: {r['judge_failed']} of {r['judged']} judge calls (scored 0)"
              for name, r in summary["benchmarks"].items() if r.get("judge_failed")]
    return "\n".join(lines)


@dataclass
class EvalConfig:
    model: str = field(metadata={"help": "model directory, hub id, bare Qwen name or .gguf file"})
    benchmarks: str = field(default="gsm8k", metadata={"help": f"comma-separated, from: {', '.join(BENCHMARKS)}"})
    data_dir: Optional[str] = field(default=None, metadata={
        "help": "folder of NAME.jsonl files (rows as the hub serves them), tried before the hub"})
    limit: Optional[int] = field(default=None, metadata={"help": "evaluate the first N questions of each benchmark"})
    samples: int = field(default=1, metadata={"help": "k samples per question (avg@k)"})
    max_new_tokens: int = field(default=12_288, metadata={"help": "response cap (paper: 12,288)"})
    judge: Optional[str] = field(default=None, metadata={
        "help": "judge model (paper: the teacher, Qwen3.5-27B-FP8): Exact+Judge fallback and BenchJudge"})
    judge_url: Optional[str] = field(default=None, metadata={"help": "OpenAI-compatible server serving --judge"})
    judge_timeout: float = field(default=600.0, metadata={
        "help": "seconds per judge request, all of it (remote judge)"})
    judge_retries: int = field(default=3, metadata={"help": "retries per judge request after a failure (remote judge)"})
    mmlu_redux_rows: str = field(default="ok", metadata={
        "choices": list(REDUX_ROWS),
        "help": "MMLU-Redux rows: ok = only rows annotated ok (lm-evaluation-harness); corrected = every row, "
                "wrong gold answers replaced by correct_answer, multi-answer rows skipped (evalscope)"})
    video_fps: float = field(default=2.0, metadata={
        "help": "video benchmarks: frames sampled per second of the video (the paper gives none: ours)"})
    video_max_frames: int = field(default=32, metadata={
        "help": "video benchmarks: at most this many frames per video, evenly spaced over the whole clip"})
    video_dir: Optional[str] = field(default=None, metadata={
        "help": "folder of the unpacked videos of Video-MME (and its subtitle/), VideoMMMU, MVBench"})
    multichallenge_closer: bool = field(default=True, metadata={
        "help": "append the closer to MultiChallenge's last user turn, as to every benchmark (paper); "
                "--no-multichallenge-closer sends the conversation untouched (our option)"})
    image_min_pixels: int = field(default=256 * 32 * 32, metadata={
        "help": "images are resized to at least this many pixels (paper: 256x32x32), whatever the checkpoint's "
                "own processor says"})
    image_max_pixels: int = field(default=1280 * 32 * 32, metadata={
        "help": "and at most this many (paper: 1280x32x32)"})
    batch_size: int = field(default=64, metadata={"help": "sequences per generate call (transformers engine)"})
    engine: str = field(default="auto", metadata={
        "choices": ["auto", "transformers", "vllm"], "help": "auto = vllm on GPU if installed, else transformers"})
    vllm_gpu_memory_utilization: float = field(default=0.3, metadata={
        "help": "share of the GPU vLLM may take (on CPU: of the machine's memory)"})
    seed: int = field(default=0, metadata={"help": "sampling seed"})
    out: Optional[str] = field(default=None, metadata={"help": "summary JSON here, rewritten after every benchmark"})
    responses: Optional[str] = field(default=None, metadata={
        "help": "every response, extracted answer, route and verdict (JSONL), appended after every benchmark"})


def main(cfg):
    """Evaluate; the summary is returned and written (--out) after every benchmark, failed ones included."""
    import torch

    from rollout import (RemoteEngine, TransformersEngine, VLLMEngine, frozen_engine, load_model, load_tokenizer,
                         pick_engine, resolve_model_name, vllm_dtype, vllm_missing)

    names = [n.strip() for n in cfg.benchmarks.split(",") if n.strip()]
    if not names:
        raise ValueError("--benchmarks names no benchmark")
    if cfg.samples < 1 or (cfg.limit is not None and cfg.limit < 0):
        raise ValueError(f"--samples must be >= 1 and --limit >= 0 (got {cfg.samples}, {cfg.limit})")
    if not 0 < cfg.image_min_pixels <= cfg.image_max_pixels:
        raise ValueError(f"--image-min-pixels must be > 0 and at most --image-max-pixels (got {cfg.image_min_pixels}, "
                         f"{cfg.image_max_pixels})")
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
            problem = safetensors_problem(os.path.join(cfg.model, name)) if name.endswith(".safetensors") else None
            if problem:
                raise ValueError(f"--model {cfg.model}: {problem}; evaluate a complete checkpoint (for a run, an "
                                 "earlier one of its checkpoints/)")
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
        engine = VLLMEngine(resolve_model_name(cfg.model), tokenizer, cfg.vllm_gpu_memory_utilization, seed=cfg.seed,
                            dtype=vllm_dtype("auto", device), pixels=pixels)
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
            slim = {n: {k: v for k, v in r.items() if k != "records"} for n, r in summary["benchmarks"].items()}
            tmp = cfg.out + ".tmp"  # written whole, then renamed: a crash never leaves half a file
            with open(tmp, "w") as f:
                json.dump({"config": asdict(cfg), "benchmarks": slim, "macro": summary["macro"],
                           "macro_over": summary["macro_over"], "macro_missing": summary["macro_missing"],
                           "errors": summary["errors"]}, f, indent=1)
            os.replace(tmp, cfg.out)

    summary = run_benchmarks(engine, names, cfg.samples, cfg.max_new_tokens, judge, cfg.data_dir, cfg.limit,
                             redux_rows=cfg.mmlu_redux_rows, on_update=write,
                             video=dict(fps=cfg.video_fps, max_frames=cfg.video_max_frames, dir=cfg.video_dir),
                             multichallenge_closer=cfg.multichallenge_closer)
    print(markdown_table(summary))
    if summary["errors"]:
        failed = ", ".join(summary["errors"])
        print(f"eval.py: {len(summary['errors'])} of {len(names)} benchmarks failed: {failed}", file=sys.stderr)
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
