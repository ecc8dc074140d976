"""Questions in, examples out: JSONL files, Hugging Face data sets, and the generated CPU-demo task.

An example is a dict: id, question, answer (gold short answer), and optionally solution (a worked
solution ending in \\boxed{answer}, used by --teacher gold) and images (a list of image file paths: a JSONL
row's `image`, one path or a list, relative to the JSONL file or absolute; a hub set's image column is
written to files once, so examples, the replay buffer and checkpoints hold paths, never pixels).
"""
import json
import os
import random
import re

_GSM8K_CALC = re.compile(r"<<[^<>]*>>")


def split_gsm8k(answer):
    """GSM8K's answer field is a worked solution ending in "#### 72": (work, "72"), else (None, answer)."""
    if "\n#### " not in answer:
        return None, answer
    work, short = answer.rsplit("\n#### ", 1)
    return work, short.strip().replace(",", "")


def read_jsonl(path, limit=None):
    """(line number, object) for each non-empty line, at most `limit`; a bad line names file and line."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if limit is not None and len(rows) >= limit:
                break
            if line.strip():
                try:
                    rows.append((lineno, json.loads(line)))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
    return rows


def _example(record, where, qid, base=""):
    """Validate one record and return the example dict; `where` names the file and line for errors."""
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected a JSON object with 'question' and 'answer', got {type(record).__name__}")
    for key in ("question", "answer"):
        if key not in record:
            raise ValueError(f"{where}: missing field {key!r} (fields present: {sorted(record)})")
    question, answer = record["question"], record["answer"]
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f"{where}: 'question' must be a non-empty string")
    if isinstance(answer, bool) or not isinstance(answer, (str, int, float)) or not str(answer).strip():
        raise ValueError(f"{where}: 'answer' must be a non-empty string or number, got {answer!r}")
    answer, solution = str(answer).strip(), record.get("solution")
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
    """Absolute paths of a row's image(s), each opened once so a missing or unreadable file fails at load,
    naming the data file and line and the path."""
    from PIL import Image, UnidentifiedImageError

    paths = value if isinstance(value, list) else [value]
    out = []
    for p in paths:
        if not isinstance(p, str) or not p:
            raise ValueError(f"{where}: 'image' must be a path or a list of paths, got {p!r}")
        path = p if os.path.isabs(p) else os.path.join(base, p)
        try:
            with Image.open(path) as image:
                image.verify()
        except FileNotFoundError:
            raise ValueError(f"{where}: image file not found: {path}") from None
        except (UnidentifiedImageError, OSError) as e:
            raise ValueError(f"{where}: image file unreadable: {path} ({type(e).__name__})") from None
        out.append(os.path.abspath(path))
    return out


def save_hub_images(record, name, split, index, folder=None):
    """A hub row's PIL image(s) written once to files (~/.cache/zppo/images), the row's `image` becoming
    their paths: examples stay JSON (buffer, checkpoints) and a question keeps the same file across runs."""
    value = record.get("image")
    images = value if isinstance(value, list) else [value]
    if value is None or not all(hasattr(im, "save") for im in images):
        return record
    folder = folder or os.path.join(os.path.expanduser("~"), ".cache", "zppo", "images", name.replace("/", "__"))
    os.makedirs(folder, exist_ok=True)
    paths = []
    for k, image in enumerate(images):
        paths.append(os.path.join(folder, f"{split}_{index}_{k}.png"))
        if not os.path.exists(paths[-1]):
            image.convert("RGB").save(paths[-1] + ".tmp.png")
            os.replace(paths[-1] + ".tmp.png", paths[-1])
    return {**record, "image": paths}


def load_jsonl(path, limit=None):
    base = os.path.dirname(os.path.abspath(path))  # image paths are relative to the data file
    examples = [_example(record, f"{path}:{lineno}", f"{os.path.basename(path)}:{lineno}", base)
                for lineno, record in read_jsonl(path, limit)]
    if not examples:
        raise ValueError(f"{path}: no examples")
    return examples


def load_hub(name, split="train", limit=None, config=None):
    """A Hugging Face data set with question/answer fields (needs network and the `datasets` package)."""
    try:
        import datasets
    except ImportError:
        raise ImportError(f"loading {name!r} from the hub needs `pip install datasets`") from None
    rows = datasets.load_dataset(name, config, split=split)
    n = len(rows) if limit is None else min(limit, len(rows))
    return [_example(save_hub_images(dict(rows[i]), name, split, i), f"{name}[{split}][{i}]", f"{name}:{split}:{i}")
            for i in range(n)]


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


def load_examples(source, split="train", limit=None, seed=0, config=None):
    """`arithmetic` (generated), a .jsonl path, or a hub data set name (with its `config`)."""
    if source == "arithmetic":
        return make_arithmetic(limit, seed=seed, split=split)
    if os.path.exists(source):
        return load_jsonl(source, limit=limit)
    if source.endswith(".jsonl"):
        raise FileNotFoundError(f"data file not found: {source}")
    return load_hub(source, split=split, limit=limit, config=config)


def take(examples, n, seed, epoch, pos):
    """The next n examples of a seeded shuffle; a new shuffle starts when a pass is done.

    Returns (batch, epoch, pos) so the position can be checkpointed and resumed exactly."""
    batch = []
    while len(batch) < n:
        order = list(range(len(examples)))
        random.Random(seed * 100_003 + epoch).shuffle(order)
        chunk = order[pos:pos + n - len(batch)]
        batch += [examples[i] for i in chunk]
        pos += len(chunk)
        if pos >= len(examples):
            epoch, pos = epoch + 1, 0
    return batch, epoch, pos
