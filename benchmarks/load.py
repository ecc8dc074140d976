"""How a benchmark's rows become examples (docs/EVAL.md, docs/evaluation.md). load_benchmark reads a
benchmark's rows, from DATA_DIR/NAME.jsonl (rows as the hub serves them) or from the hub, config by config,
and converts them by its entry in the BENCHMARKS table: choices lettered, the benchmark's own format
directives stripped, MMLU-Redux's rows re-targeted, images written to files, videos sampled, rows this
student or grader cannot take skipped and counted. score.py scores what it loads."""
import ast
import os
import random
import re
from collections import Counter

from benchmarks import BENCHMARKS
from benchmarks.llm import conversation, redux_target
from benchmarks.video import VideoError, attach_video
from data import answer_text, make_arithmetic, read_jsonl, split_gsm8k
from reward import is_choice

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


def letter_of(answer, options, answer_is):
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
            paths += save_hub_images({"image": value}, name, where.replace("/", "_"), k,
                                     version=row.get("_hub_version"))["image"]
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
    # the columns an upstream headline groups by (a task, a duration, a seed question), and the config
    meta = {c: row.get(c) for c in spec.get("keep", [])}
    example = {"id": row_id, "route": spec["route"], "meta": dict(meta, config=config) if config else meta}
    if spec.get("convert"):  # the benchmark's module: its fields -> question, answer, route (or why skipped)
        got = spec["convert"](dict(row, config=config) if config and "config" not in row else row,
                              spec, where)
        if isinstance(got, str):
            return None, got
        if "video_file" in got:  # a video benchmark: the clip's frames sampled and cached (video.py)
            try:
                got = attach_video(got, spec, where, base, video or {})
            except VideoError as e:  # an unreadable video costs its row, counted
                return None, "video: " + ("not found" if "not found" in str(e) or "not downloadable" in str(e)
                                          else "undecodable")
        return _converted(example, got, row, spec, where, base, name, has_image, get), None
    if has_image:
        example["images"] = row_images(row, spec, where, base, name)
    if spec["route"] == "multichallenge":
        messages = conversation(get["conversation"], where)
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
            options, answer = redux_target(row, options, redux_rows)
            if options is None:
                return None, answer
        if spec.get("shuffle"):  # GPQA: fixed per question, so every run sees the same order
            random.Random(str(get["question"])).shuffle(options)
        answer = letter_of(answer, options, spec["answer_is"])
        if answer is None:
            return None, "answer_format"
        return dict(example, question=stem + "\n\n" + render_choices(options), stem=stem,
                    options=render_choices(options), answer=answer), None
    if answer_text(answer) is None:  # null, a boolean, NaN, blank: no gold to grade against
        return None, "answer_format"
    if isinstance(answer, str):
        answer = split_gsm8k(answer)[1]  # GSM8K: the short answer after "####"
    return dict(example, question=stem, answer=answer_text(answer)), None


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
            version = getattr(rows, "_fingerprint", None)  # the set's revision: its images' cache folder
            for i in range(len(rows)):
                yield f"{spec['hub']}[{config}][{split}][{i}]", label, {**rows[i], "_hub_version": version}


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


def load_benchmark(name, data_dir=None, limit=None, redux_rows="ok", vision=False, video=None, options=None):
    """(examples, skipped rows by reason) from DATA_DIR/NAME.jsonl if present, else from the hub (per-config
    sets loaded config by config and concatenated); errors say what was tried. Rows of a local file are shaped
    as the hub serves them; for a multi-config set an optional `config` field names each row's subject.
    `options`: the prompt choices a converter reads ({"mathvista_hint": bool, ...}; eval.py's flags)."""
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
    if redux_rows not in REDUX_ROWS:
        raise ValueError(f"redux_rows must be one of {REDUX_ROWS}, got {redux_rows!r}")
    spec, tried = dict(BENCHMARKS[name], options=options or {}), []
    if name == "arithmetic":
        return [dict(ex, route="rule", meta={}) for ex in make_arithmetic(limit, split="test")], {}
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
