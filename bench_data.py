"""The benchmark registry and how a benchmark's rows become examples (README "Evaluation"; EVAL.md).

BENCHMARKS names every benchmark: where its rows live (the hub, or DATA_DIR/NAME.jsonl in the hub's columns),
its family and protocol, and how its columns map to a question and a gold answer (benchmarks.SPECS, the later
VLM and the video benchmarks, merged in). load_benchmark reads one benchmark's rows and converts them:
choices lettered, the benchmark's own format directives stripped, MMLU-Redux's rows re-targeted, images
written to files, rows this student or grader cannot take skipped and counted. eval.py scores what it loads;
config.py checks --eval-benchmarks against the registry.
"""
import ast
import os
import random
import re
from collections import Counter

import benchmarks
from data import make_arithmetic, read_jsonl, split_gsm8k
from reward import is_choice

AIME2025_CONFIGS = ["AIME2025-I", "AIME2025-II"]
# The 57 MMLU subjects, as mmlu-redux-2.0 names its configs (there is no combined config). The names are
# those of the set's card; lm-evaluation-harness (tasks/mmlu-redux) and evalscope (benchmarks/mmlu_redux)
# load mirrors of the set by the same 57 names. Not loaded from the hub here (no network).
MMLU_REDUX_SUBJECTS = [
    "abstract_algebra", "anatomy", "astronomy", "business_ethics", "clinical_knowledge", "college_biology",
    "college_chemistry", "college_computer_science", "college_mathematics", "college_medicine",
    "college_physics", "computer_security", "conceptual_physics", "econometrics", "electrical_engineering",
    "elementary_mathematics", "formal_logic", "global_facts", "high_school_biology", "high_school_chemistry",
    "high_school_computer_science", "high_school_european_history", "high_school_geography",
    "high_school_government_and_politics", "high_school_macroeconomics", "high_school_mathematics",
    "high_school_microeconomics", "high_school_physics", "high_school_psychology", "high_school_statistics",
    "high_school_us_history", "high_school_world_history", "human_aging", "human_sexuality",
    "international_law", "jurisprudence", "logical_fallacies", "machine_learning", "management", "marketing",
    "medical_genetics", "miscellaneous", "moral_disputes", "moral_scenarios", "nutrition", "philosophy",
    "prehistory", "professional_accounting", "professional_law", "professional_medicine",
    "professional_psychology", "public_relations", "security_studies", "sociology", "us_foreign_policy",
    "virology", "world_religions",
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
    "modern_chinese_history", "ideological_and_moral_cultivation", "logic", "law",
    "chinese_language_and_literature", "art_studies", "professional_tour_guide", "legal_professional",
    "high_school_chinese", "high_school_history", "middle_school_history", "civil_servant", "sports_science",
    "plant_protection", "basic_medicine", "clinical_medicine", "urban_and_rural_planner", "accountant",
    "fire_engineer", "environmental_impact_assessment_engineer", "tax_accountant", "physician",
]
GPQA_OPTIONS = ["Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3"]
MMMU_PRO_CONFIGS = ["standard (10 options)", "standard (4 options)", "vision"]
MMMU_PRO_IMAGES = [f"image_{i}" for i in range(1, 8)]

# name -> where the questions live and how to score them. hub with `config` (one) or `configs` (loaded one by
# one and concatenated); `fields` maps our names to the set's own columns (all required); `id` names the row
# id column (optional); `choices` is a list column (or list of columns) of options rendered "A. ...", the gold
# answer being an option's index, letter or text (`answer_is`); `route`:
# "rule" (Exact+Judge on short answers), "choice" (Exact+Judge on letters), "multichallenge" / "hle"
# (BenchJudge); `images`: the image columns (a file path, relative to a local file, or the hub's image): a row
# with an image goes to a vision-language student with it, and is skipped and counted for a text-only one;
# `optional`: our fields a config may lack (MMMU-Pro's vision config has the question inside the image);
# `options_text`: a column of option text appended to the question as it is (WeMath).
# Family "llm" is the paper's 10 LLM benchmarks (Table 6): their unweighted mean is its LLM average. The
# project's own extras are family "math", so they never enter that average.
BENCHMARKS = {
    "aime2025": dict(family="llm", protocol="Exact+Judge", hub="opencompass/AIME2025",
                     configs=AIME2025_CONFIGS, split="test", route="rule",
                     fields={"question": "question", "answer": "answer"}),
    "aime2026": dict(family="llm", protocol="Exact+Judge", hub="MathArena/aime_2026", split="train",
                     route="rule", fields={"question": "problem", "answer": "answer"}, id="problem_idx"),
    "ceval": dict(family="llm", protocol="Exact+Judge", hub="ceval/ceval-exam", configs=CEVAL_SUBJECTS,
                  split="val", route="choice", fields={"question": "question", "answer": "answer"},
                  choices=["A", "B", "C", "D"], answer_is="letter", id="id"),
    "gpqa_diamond": dict(family="llm", protocol="Exact+Judge", hub="Idavidrein/gpqa", config="gpqa_diamond",
                         split="train", route="choice",
                         fields={"question": "Question", "answer": "Correct Answer"}, choices=GPQA_OPTIONS,
                         answer_is="text", shuffle=True, id="Record ID"),
    "hle": dict(family="llm", protocol="BenchJudge", hub="cais/hle", split="test", route="hle",
                fields={"question": "question", "answer": "answer"}, id="id", images=["image"]),
    "imo_answerbench": dict(family="llm", protocol="Exact+Judge", hub="OpenEvals/IMO-AnswerBench",
                            split="train", route="rule",
                            fields={"question": "Problem", "answer": "Short Answer"}, id="Problem ID"),
    "mmlu": dict(family="llm", protocol="Exact+Judge", hub="cais/mmlu", config="all", split="test",
                 route="choice", fields={"question": "question", "answer": "answer"}, choices="choices",
                 answer_is="index"),
    "mmlu_pro": dict(family="llm", protocol="Exact+Judge", hub="TIGER-Lab/MMLU-Pro", split="test",
                     route="choice", fields={"question": "question", "answer": "answer"}, choices="options",
                     answer_is="letter", id="question_id"),
    "mmlu_redux": dict(family="llm", protocol="Exact+Judge", hub="edinburgh-dawg/mmlu-redux-2.0",
                       configs=MMLU_REDUX_SUBJECTS, split="test", route="choice",
                       fields={"question": "question", "answer": "answer", "error_type": "error_type"},
                       choices="choices", answer_is="index"),
    "multichallenge": dict(family="llm", protocol="BenchJudge", hub="ScaleAI/MultiChallenge", split="test",
                           route="multichallenge", id="question_id",
                           fields={"conversation": "conversation", "target_question": "target_question",
                                   "answer": "pass_criteria"}),
    # the paper's VLM benchmarks that the Exact+Judge / Rule+Judge routes score (columns from the sets' cards)
    "mathvista": dict(family="vlm", protocol="Rule+Judge", hub="AI4Math/MathVista", split="testmini",
                      route="rule", fields={"question": "question", "answer": "answer"}, choices="choices",
                      answer_is="text", choices_optional=True, images=["decoded_image"], id="pid"),
    "mathverse": dict(family="vlm", protocol="Exact+Judge", hub="CaraJ/MathVerse-lmmseval", config="testmini",
                      split="testmini", route="rule", fields={"question": "question", "answer": "answer"},
                      images=["image"], id="sample_index"),
    "mathvision": dict(family="vlm", protocol="Exact+Judge", hub="MathLLMs/MathVision", split="test",
                       route="rule", fields={"question": "question", "answer": "answer"}, choices="options",
                       answer_is="letter", choices_optional=True, images=["decoded_image"], id="id"),
    "ai2d": dict(family="vlm", protocol="Exact+Judge", hub="lmms-lab/ai2d", split="test", route="choice",
                 fields={"question": "question", "answer": "answer"}, choices="options", answer_is="index",
                 images=["image"]),
    "wemath": dict(family="vlm", protocol="Exact+Judge", hub="We-Math/We-Math", split="testmini",
                   route="choice", fields={"question": "question", "answer": "answer"}, options_text="option",
                   images=["image"], id="ID"),
    "mmmu_pro": dict(family="vlm", protocol="Exact+Judge", hub="MMMU/MMMU_Pro", configs=MMMU_PRO_CONFIGS,
                     split="test", route="choice", fields={"question": "question", "answer": "answer"},
                     optional=["question"], choices="options", answer_is="letter",
                     images=["image", *MMMU_PRO_IMAGES], id="id"),
    # not in the paper
    "gsm8k": dict(family="math", protocol="Exact+Judge", hub="openai/gsm8k", config="main", split="test",
                  route="rule", fields={"question": "question", "answer": "answer"}),
    "math500": dict(family="math", protocol="Exact+Judge", hub="HuggingFaceH4/MATH-500", split="test",
                    route="rule", fields={"question": "problem", "answer": "answer"}, id="unique_id"),
    "arithmetic": dict(family="math", protocol="Exact+Judge", hub=None, split="test", route="rule",
                       fields={}),
}
# the other VLM benchmarks of the paper (and CharXiv's descriptive questions), defined in benchmarks.py
BENCHMARKS.update(benchmarks.SPECS)
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
    """row[name]; MultiChallenge's own JSONL spells its columns in capitals (QUESTION_ID, ...): those count
    too."""
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
    only rows annotated ok; "corrected" follows evalscope: wrong_groundtruth takes correct_answer (an index or
    a letter), no_correct_answer puts correct_answer in place of the marked option, rows with several right
    options are skipped (one letter is graded here), other annotations keep the original answer."""
    error_type, answer = str(row["error_type"]).strip(), row["answer"]
    if error_type == "ok":
        return options, answer
    if redux_rows == "ok":
        return None, f"error_type={error_type}"
    fix = str(row.get("correct_answer") or "").strip()
    if error_type == "wrong_groundtruth":
        index = (int(fix) if fix.isdigit() else LETTERS.index(fix.upper()) if re.fullmatch("[A-Za-z]", fix)
                 else None)
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


def to_example(row, spec, where, config=None, redux_rows="ok", vision=False, base="", name="bench",
               video=None):
    """A raw benchmark row (hub or local JSONL, the hub's columns) -> (example, None), or (None, why skipped)
    for a row this student or grader cannot take (an image, an unknown answer format, an MMLU-Redux row left
    out by --mmlu-redux-rows). A row without the set's columns is an error naming `where`."""
    if not isinstance(row, dict):
        # ValueError, as for every other bad row (eval.py reports a ValueError by its text alone)
        raise ValueError(f"{where}: expected a JSON object, got {type(row).__name__}")  # noqa: TRY004
    optional = [spec["fields"][k] for k in spec.get("optional", [])]
    missing = [c for c in spec["fields"].values()
               if c not in row and c.upper() not in row and c not in optional]
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
        got = spec["convert"](dict(row, config=config) if config and "config" not in row else row,
                              spec, where)
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
    # MMMU-Pro stores its options as a list's text
    if isinstance(listed, str) and listed.strip().startswith("["):
        listed = ast.literal_eval(listed)
    if choices and (listed or not spec.get("choices_optional")):
        if isinstance(choices, list) and any(c not in row for c in choices):  # GPQA's option columns
            raise ValueError(f"{where}: missing field(s) {[c for c in choices if c not in row]} "
                             f"(has {sorted(row)})")
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
    """A converter's fields made an example: its suffix on the id, its options lettered (an index gold
    answer), its question without the benchmark's format directives, the row's images."""
    got = dict(got)
    if "id_suffix" in got:
        example["id"] = f"{example['id']}:{got.pop('id_suffix')}"
    if has_image:
        example["images"] = row_images(row, spec, where, base, name)
    if "choices" in got:
        options = got.pop("choices")
        stem = strip_directives(str(got.pop("question", None) or get.get("question") or ""))
        got.update(stem=stem, question=stem + "\n\n" + render_choices(options),
                   options=render_choices(options), answer=LETTERS[got.pop("letter_index")])
    else:
        got["question"] = strip_directives(got["question"] if "question" in got
                                           else str(get.get("question") or ""))
    return dict(example, **got)


def hub_rows(spec):
    """(where, config, row) over the hub set, its configs loaded one at a time (a --limit may stop early)."""
    import datasets

    for config in spec.get("configs") or [spec.get("config")]:
        for split in spec.get("splits") or [spec["split"]]:  # DynaMath: one split per variant
            try:
                rows = datasets.load_dataset(spec["hub"], config, split=split)
            except Exception as e:  # noqa: BLE001 (whatever the hub raises: one error naming config and split)
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
        for where, row in (spec["expand"](row, where)  # noqa: B020 (its rows replace the hub row)
                           if spec.get("expand") and isinstance(row, dict) else [(where, row)]):
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
            return _convert(rows, spec, limit, redux_rows, vision, os.path.dirname(os.path.abspath(path)),
                            name, video)
        tried.append(f"{path} (not found)")
    try:
        return _convert(hub_rows(spec), spec, limit, redux_rows, vision, "", name, video)
    # no network, no `datasets`, a renamed set: report and let the others run
    except Exception as e:  # noqa: BLE001
        tried.append(f"hub {spec['hub']} ({type(e).__name__}: {str(e)[:300]})")
    raise RuntimeError(f"benchmark {name!r} could not be loaded; tried: " + "; ".join(tried))


PAPER_FAMILIES = {"vlm": 16, "llm": 10, "video": 5}  # the paper's Tables 5-7: benchmarks per family


def paper_families():
    """The paper's families and their benchmarks, as the registry defines them."""
    return {fam: [n for n, s in BENCHMARKS.items() if s["family"] == fam] for fam in PAPER_FAMILIES}
