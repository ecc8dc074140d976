"""Questions in, examples out: JSONL files, Hugging Face data sets, and the generated CPU-demo task.

An example is a dict: id, question, answer (gold short answer), and optionally solution (a worked
solution ending in \\boxed{answer}, used by --teacher gold) and images (a list of image file paths: a JSONL
row's `image`, one path or a list, relative to the JSONL file or absolute; a hub set's image column is
written to files once, so examples, the replay buffer and checkpoints hold paths, never pixels).

Every image is read and decoded in full at load (read_image, decode_image: 15-25 ms for a 1,000 x 800
PNG on one core), so a bad file stops the load, not a step after the model has loaded: missing, a directory,
empty, no permission, a symlink loop, not an image, a bad checksum, pixel data cut short, a decompression
bomb, or a shape the image processor refuses; the error names the data file and line (a hub set's row), the
image path, what is wrong and what was expected. Any mode PIL converts to RGB (palette, 16-bit, CMYK, 1-bit)
is fine: training converts it the same way (rollout.open_image).
"""
import decimal
import functools
import hashlib
import json
import math
import os
import random
import re
import warnings

_GSM8K_CALC = re.compile(r"<<[^<>]*>>")


def split_gsm8k(answer):
    """GSM8K's answer field is a worked solution ending in "#### 72": (work, "72"), else (None, answer)."""
    if "\n#### " not in answer:
        return None, answer
    work, short = answer.rsplit("\n#### ", 1)
    return work, short.strip().replace(",", "")


def read_jsonl(path, limit=None):
    """(line number, object) for each non-empty line, at most `limit`; a bad line names file and line.

    Lines are decoded one at a time, so a byte that is not UTF-8 is reported with its line too."""
    rows = []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if limit is not None and len(rows) >= limit:
                break
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")  # a byte-order mark may open it
            except UnicodeDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not UTF-8 (byte 0x{raw[e.start]:02x} at byte "
                                 f"{e.start + 1} of the line); save the file as UTF-8") from None
            if line.strip():
                try:
                    rows.append((lineno, json.loads(line)))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg} at column {e.colno})"
                                     ) from None
    return rows


def unique_ids(examples, wheres, dedup=False):
    """The examples with distinct ids. An id names a question's advantage groups and its buffer entry, so two
    rows with one id would merge different questions: an error naming both places, or with `dedup` the
    first row is kept (and the number dropped is printed). `wheres` names each example's file and line."""
    first, kept = {}, []
    for ex, where in zip(examples, wheres):
        if ex["id"] not in first:
            first[ex["id"]] = where
            kept.append(ex)
        elif not dedup:
            raise ValueError(f"{where}: duplicate id {ex['id']!r} (first at {first[ex['id']]}); ids must be "
                             "unique: fix the data, or pass --dedup-ids to keep the first row of each id")
    if len(kept) < len(examples):
        print(f"--dedup-ids: dropped {len(examples) - len(kept)} rows whose id appeared before")
    return kept


def answer_text(answer):
    """A gold answer as the text graders compare: a JSON number as the exact decimal it is (1e-05 ->
    "0.00001", 1e20 -> "100000000000000000000", an integer as it is; str() wrote "1e-05", which equals no
    boxed 0.00001), a string stripped; None for what is no answer (null, a boolean, NaN or infinity, blank,
    any other type)."""
    if isinstance(answer, bool) or not isinstance(answer, (str, int, float)):
        return None
    if isinstance(answer, float):
        if not math.isfinite(answer):
            return None
        answer = format(decimal.Decimal(repr(answer)), "f")  # repr: the shortest text that reads back as it
    return str(answer).strip() or None


def _example(record, where, qid, base=""):
    """Validate one record and return the example dict; `where` names the file and line for errors."""
    if not isinstance(record, dict):  # a bad line of a data file is a ValueError, whatever is wrong with it
        raise ValueError(f"{where}: expected a JSON object with 'question' and 'answer', got "  # noqa: TRY004
                         f"{type(record).__name__}")
    for key in ("question", "answer"):
        if key not in record:
            raise ValueError(f"{where}: missing field {key!r} (fields present: {sorted(record)})")
    question, answer = record["question"], record["answer"]
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f"{where}: 'question' must be a non-empty string")
    if answer_text(answer) is None:
        raise ValueError(f"{where}: 'answer' must be a non-empty string or number (a finite one), got "
                         f"{answer!r}")
    answer, solution = answer_text(answer), record.get("solution")
    work, short = split_gsm8k(answer)
    if solution is None and work is not None:
        answer = short
        solution = f"{_GSM8K_CALC.sub('', work).strip()}\nThe answer is \\boxed{{{answer}}}."
    example = {"id": str(record.get("id", qid)), "question": question.strip(), "answer": answer}
    if solution is not None:
        if not isinstance(solution, str):
            raise ValueError(f"{where}: 'solution' must be a string")
        example["solution"] = solution
    if record.get("image") is not None:
        example["images"] = check_images(record["image"], where, base)
    return example


def check_images(value, where, base=""):
    """Absolute paths of a row's image(s), each read and decoded in full once (read_image, decode_image), so
    a bad file fails at load, not after the model has loaded: the error names the data file and line, the
    path, what is wrong and what was expected."""
    paths = value if isinstance(value, list) else [value]
    out = []
    for p in paths:
        if not isinstance(p, str) or not p:
            raise ValueError(f"{where}: 'image' must be a path or a list of paths, got {p!r}")
        path = p if os.path.isabs(p) else os.path.join(base, p)
        try:
            decode_image(read_image(path), path)
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
        out.append(os.path.abspath(path))
    return out


# Qwen's image processor (smart_resize) refuses an image whose longer side is over 200 times the shorter
MAX_ASPECT_RATIO = 200
AN_IMAGE = "expected an image file that PIL decodes in full (PNG, JPEG, WebP, ...)"


def read_image(path):
    """The bytes of an image file, or a ValueError saying what is wrong with the path and what was expected:
    not found (a dangling symlink too), a directory, no permission, a symlink loop, a path through a file,
    an empty file."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise ValueError(f"image file not found: {path}; expected an existing image file") from None
    except IsADirectoryError:
        raise ValueError(f"image path is a directory: {path}; expected an image file") from None
    except OSError as e:  # no permission, a symlink loop, a path through a file, ...
        raise ValueError(f"image file unreadable: {path} ({e.strerror}); expected a readable image file"
                         ) from None
    if not raw:
        raise ValueError(f"image file is empty: {path} (0 bytes); {AN_IMAGE}")
    return raw


def decode_image(raw, path):
    """An image file's bytes `raw` (or an image a hub set's column already opened) decoded in full, as
    training opens it (rollout.open_image: every pixel, converted to RGB), or a ValueError naming `path`,
    what is wrong and what was expected. Image.verify() checks the PNG checksums and chunks but decodes no
    pixel; the conversion decodes every pixel but skips the checksums: both run. A decompression bomb (over
    PIL's Image.MAX_IMAGE_PIXELS, where PIL only warns, or twice that) is refused before decoding, as is a
    shape the image processor refuses (aspect ratio over MAX_ASPECT_RATIO)."""
    import io
    import warnings

    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # refused, not decoded
            if isinstance(raw, bytes):
                with Image.open(io.BytesIO(raw)) as image:
                    image.verify()
                with Image.open(io.BytesIO(raw)) as image:
                    rgb = image.convert("RGB")
            else:
                rgb = raw.convert("RGB")
    except UnidentifiedImageError:
        raise ValueError(f"image file unreadable: {path} (not an image format PIL knows); {AN_IMAGE}"
                         ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ValueError(f"image too large: {path} ({e}); expected at most {Image.MAX_IMAGE_PIXELS:,} pixels "
                         "(PIL's limit; the image processor shrinks every image far below it): shrink it"
                         ) from None
    except Exception as e:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ValueError, ... for a bad file
        raise ValueError(f"image file unreadable: {path} ({type(e).__name__}: {e}); {AN_IMAGE}") from None
    w, h = rgb.size
    if max(w, h) > MAX_ASPECT_RATIO * min(w, h):
        raise ValueError(f"image shape refused by the image processor: {path} is {w} x {h} pixels, aspect "
                         f"ratio {max(w, h) / min(w, h):g}; expected at most {MAX_ASPECT_RATIO}: pad or crop "
                         "it")
    return rgb


def save_hub_images(record, name, split, index, folder=None, version=None):
    """A hub row's PIL image(s) written once to files (~/.cache/zppo/images), the row's `image` becoming
    their paths: examples stay JSON (buffer, checkpoints) and a question keeps the same file across runs.
    The folder is the set's `version` (its datasets fingerprint): a new revision of the set writes its images
    anew instead of pairing its rows with an older revision's files. Each is decoded in full first
    (decode_image): a bad one fails naming the set, split and row."""
    value = record.get("image")
    images = value if isinstance(value, list) else [value]
    if value is None or not all(hasattr(im, "save") for im in images):
        return record
    folder = folder or os.path.join(os.path.expanduser("~"), ".cache", "zppo", "images",
                                    name.replace("/", "__"), version or "unversioned")
    os.makedirs(folder, exist_ok=True)
    paths = []
    for k, image in enumerate(images):
        paths.append(os.path.join(folder, f"{split}_{index}_{k}.png"))
        if not os.path.exists(paths[-1]):
            try:
                rgb = decode_image(image, f"image {k} of the row")
            except ValueError as e:
                raise ValueError(f"{name}[{split}][{index}]: {e}") from None
            rgb.save(paths[-1] + ".tmp.png")
            os.replace(paths[-1] + ".tmp.png", paths[-1])
    return {**record, "image": paths}


def load_jsonl(path, limit=None, dedup_ids=False):
    base = os.path.dirname(os.path.abspath(path))  # image paths are relative to the data file
    rows = read_jsonl(path, limit)
    wheres = [f"{path}:{lineno}" for lineno, _ in rows]
    examples = [_example(record, where, f"{os.path.basename(path)}:{lineno}", base)
                for where, (lineno, record) in zip(wheres, rows)]
    if not examples:
        raise ValueError(f"{path}: no examples")
    return unique_ids(examples, wheres, dedup_ids)


def load_hub(name, split="train", limit=None, config=None, dedup_ids=False):
    """A Hugging Face data set with question/answer fields (needs network and the `datasets` package)."""
    try:
        import datasets
    except ImportError:
        raise ImportError(f"loading {name!r} from the hub needs `pip install datasets`") from None
    rows = datasets.load_dataset(name, config, split=split)
    n = len(rows) if limit is None else min(limit, len(rows))
    wheres = [f"{name}[{split}][{i}]" for i in range(n)]
    version = getattr(rows, "_fingerprint", None)  # changes with the set's content
    examples = [_example(save_hub_images(dict(rows[i]), name, split, i, version=version), wheres[i],
                         f"{name}:{split}:{i}") for i in range(n)]
    if not examples:
        raise ValueError(f"{name}[{split}]: no examples")
    return unique_ids(examples, wheres, dedup_ids)


def make_arithmetic(n=None, seed=0, split="train", max_operand=20):
    """The CPU demo's task: small sums and differences, each with a worked solution for --teacher gold.

    Easy enough that a 135M-parameter chat model knows many answers, hard enough that it rarely
    writes them in the \\boxed{} format the reward demands: a task it can almost do. Every distinct
    question appears once; one in five is held out as the test split.
    """
    pool = [(a, op, b) for a in range(1, max_operand + 1) for b in range(1, max_operand + 1) for op in "+-"
            if op == "+" or a >= b]
    random.Random(1234).shuffle(pool)  # fixed: the train/test split never depends on --seed
    pool = [x for i, x in enumerate(pool) if (i % 5 == 0) == (split != "train")]
    random.Random(seed).shuffle(pool)
    examples = []
    for a, op, b in pool[:n]:
        c = a + b if op == "+" else a - b
        examples.append({
            "id": f"arith:{a}{op}{b}", "question": f"What is {a} {op} {b}?", "answer": str(c),
            "solution": f"<think>{a} {op} {b} = {c}</think> The answer is \\boxed{{{c}}}.",
        })
    return examples


def load_examples(source, split="train", limit=None, seed=0, config=None, dedup_ids=False):
    """`arithmetic` (generated), a .jsonl path, or a hub data set name (with its `config`). Ids are unique: a
    duplicate is an error unless `dedup_ids` keeps the first row of each."""
    if source == "arithmetic":
        return make_arithmetic(limit, seed=seed, split=split)
    if os.path.exists(source):
        return load_jsonl(source, limit=limit, dedup_ids=dedup_ids)
    if source.endswith(".jsonl"):
        raise FileNotFoundError(f"data file not found: {source}")
    return load_hub(source, split=split, limit=limit, config=config, dedup_ids=dedup_ids)


def take(examples, n, seed, epoch, pos):
    """The next n examples of a seeded shuffle of the data, all from one pass.

    A new pass (a new shuffle) starts only for a whole batch: when fewer than n examples are left in the
    current pass, they are skipped, so a batch never holds an example twice. Returns (batch, epoch, pos):
    the pass the batch came from and the position after it, so a run is checkpointed and resumed exactly."""
    if not 1 <= n <= len(examples):
        raise ValueError(f"a batch of {n} distinct examples cannot come from {len(examples)}")
    if pos + n > len(examples):
        epoch, pos = epoch + 1, 0
    order = list(range(len(examples)))
    random.Random(seed * 100_003 + epoch).shuffle(order)
    return [examples[i] for i in order[pos:pos + n]], epoch, pos + n


@functools.lru_cache(maxsize=4)
def _sha256(path, size, mtime_ns):  # hashed once per version of the file, not at every save
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()

def data_identity(data):
    """What a run's questions are: a data file's path and content hash (the buffer and the data position refer
    to its rows), or the name of a generated or hub data set."""
    if not os.path.isfile(data):
        return {"name": data}
    stat, path = os.stat(data), os.path.realpath(data)
    return {"path": path, "sha256": _sha256(path, stat.st_size, stat.st_mtime_ns)}


def load_training_data(cfg):
    """The training questions, before any model loads: every bad row named by file and line, ids unique,
    enough questions for one step, and for --teacher gold worked solutions to stand in for the teacher."""
    from config import TEACHER_GUIDED

    examples = load_examples(cfg.data, limit=cfg.data_limit, seed=cfg.seed, config=cfg.data_config,
                             dedup_ids=cfg.dedup_ids)
    if cfg.questions_per_step > len(examples):
        raise SystemExit(f"--questions-per-step {cfg.questions_per_step} is more than the {len(examples)} "
                         f"questions of {cfg.data}: a step would hold a question twice")
    without = sum(not ex.get("solution") for ex in examples)
    if cfg.teacher == "gold" and (cfg.bcq or cfg.algo in TEACHER_GUIDED) and without:
        if without == len(examples):
            raise SystemExit(f"--teacher gold: no question of {cfg.data} has a `solution` field, so no "
                             "question would ever get a correct teacher answer (no BCQ, no hint or prefix); "
                             "add worked solutions, use a teacher model, or --no-bcq")
        warnings.warn(f"--teacher gold: {without} of the {len(examples)} questions of {cfg.data} have no "
                      "`solution`: those never get a correct teacher answer (no BCQ)")
    return examples


def fit_prompts(cfg, examples, tokenizer):
    """The questions whose plain prompt, as the student's tokenizer makes it (chat template, image tokens),
    fits --max-prompt-tokens; at least one step's worth, else SystemExit."""
    from reformulate import plain_prompt
    from rollout import encode_prompt

    if any(e.get("images") for e in examples) and not hasattr(tokenizer, "image_processor"):
        raise ValueError(f"{cfg.data} has images but the student is a text model: use a vision-language "
                         "checkpoint" + (" without --text-only" if cfg.text_only else ""))
    lengths = [len(encode_prompt(tokenizer, plain_prompt(e))[0]) for e in examples]  # as the student sees it
    kept = [e for e, n in zip(examples, lengths) if n <= cfg.max_prompt_tokens]
    if len(kept) < len(examples):
        print(f"dropping {len(examples) - len(kept)} questions whose plain prompt exceeds "
              f"{cfg.max_prompt_tokens} tokens")
    if not kept:
        raise SystemExit(f"none of the {len(examples)} questions of {cfg.data} fits --max-prompt-tokens "
                         f"{cfg.max_prompt_tokens}: the shortest plain prompt has {min(lengths)} tokens")
    if cfg.questions_per_step > len(kept):
        raise SystemExit(f"--questions-per-step {cfg.questions_per_step} is more than the {len(kept)} "
                         f"questions of {cfg.data} that fit --max-prompt-tokens {cfg.max_prompt_tokens}: a "
                         "step would hold a question twice")
    return kept
