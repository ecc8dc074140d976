"""Build ZPPO-77K, the paper's training set (its appendix B.1; docs/EVAL.md "Training data"),
as the JSONL + image files that `train.py --data` reads.

    python scripts/build_data.py --out data/zppo77k --tokenizer Qwen/Qwen3.5-0.8B
    # local stand-ins
    python scripts/build_data.py --out /tmp/t --vero vero.jsonl --mmfr mmfr.jsonl --tokenizer M

Sources: zlab-princeton/Vero-600k (columns prompt, images, reward_type, data_source, domain, answer) and
OpenDataArena/MMFineReason-SFT-586K-Qwen3-VL-235B-Thinking (id, question with an <image> marker, answer,
image, source, pass_rate, ...), each a hub id or a local .jsonl of rows in the same columns (image columns
hold paths relative to the file). Every row goes through, in order (each removal counted in the summary):

  1. tier         its sub-set (data_source / source, canonical name) is in tier 1 (cap 2,800) or tier 2
                  (1,400)
  2. cross-source an MMFineReason sub-set whose canonical name Vero also has: Vero's copy wins (the paper's
                  canonical-name merge; e.g. Vero's stem-ai2d_merged and MMFineReason's AI2D)
  3. pass_rate    MMFineReason rows with pass_rate > 0.5 (or none) go
  4. answer       no answer, or longer than 512 characters
  then, per sub-set, candidates in a seeded shuffle until the cap is filled:
  5. question     no question text left once the <image> marker and format directives are stripped [ours]
  6. duplicate    the same question, answer and first image as a row already kept (Vero's sub-sets first)
                  [ours]
  7. image        no image, or one that train.py's loader refuses (data.read_image / decode_image: missing,
                  a directory, empty, unreadable, a bad checksum, pixel data cut short, over PIL's
                  decompression-bomb limit, an aspect ratio the image processor refuses), or
                  min(h, w) < 100 pixels
  8. prompt       the student's prompt (chat template + image tokens + text + closer) over 4,096 tokens
  9. cap          candidates left once a sub-set has its cap

Columns: each column read has one rule. A value the filters above remove is counted there; any other
missing or mistyped value stops the build with the file and line (a hub set's row index), the column, what
it holds and what was expected. A local source is checked whole before any sub-set is built; a hub row's
cheap columns in the scan, the others when its sub-set reaches it.

  column (source)        counted as removed                 stops the build
  data_source / source   -                                  missing, not a non-empty string
  answer                 missing, null, blank: answer       any other type (a number: write "5", not 5)
  pass_rate (MMFR)       missing or null: pass_rate         not a number in [0, 1] (a string, NaN, true)
  prompt (Vero)          only a directive: question         missing, not a list of {role, content}
                                                            messages with a user message whose content is
                                                            a string or a list of parts (text parts: a
                                                            string "text")
  question (MMFR)        only the <image> marker: question  missing, not a string
  images (Vero)          missing, null, []: image           not a list of paths or hub images
  image (MMFR)           missing, null, []: image           not a path, a hub image or a list of them
  id (MMFR)              -                                  not a string, an integer or null
  a whole row            -                                  not a JSON object

Where the paper is silent (which rows fill a cap: a seeded shuffle; the per-example duplicate key; the
canonical names) the choice is ours and a flag. Every numeric flag is checked at start (scripts.number).
Outputs: OUT/zppo77k.jsonl (id, question, answer, image, source, subset, tier), OUT/images/, OUT/summary.json
and OUT/summary.md.

Resumable, never stale: each sub-set is written to OUT/parts/ and marked done in OUT/state.json with the
sha256 of every image file it read (by the path its rows give, relative to the source file). state.json also
records the settings that decide the output (every flag but --out, --vero, --mmfr and --tokenizer, which
count by content) and the inputs by content: each local source file's sha256 (a hub set: its name and the
`datasets` fingerprint) and the tokenizer's (its tokenizer.json, chat template and image processor settings).
A rerun keeps the done sub-sets only when all of these are unchanged (each recorded image is read and hashed
again); otherwise it refuses, naming what changed (a flag's old and new value, the source file or the
tokenizer, or the image and the sub-set that read it): restore the input to resume, or build into a new
--out. A sub-set that was not done (a build killed inside it) is rebuilt from nothing: its images folder is
emptied first, so no row pairs a question with an image from before. A folder with no done sub-set takes the
new settings and inputs as they are.
"""
import argparse
import hashlib
import json
import os
import random
import re
import shutil
import sys
from collections import Counter, defaultdict

from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from data import decode_image, read_image, read_jsonl
from reformulate import plain_prompt
from scripts import number

VERO, MMFR = "zlab-princeton/Vero-600k", "OpenDataArena/MMFineReason-SFT-586K-Qwen3-VL-235B-Thinking"
# the paper's tiers (B.1), as canonical names (canonical() of the sub-set names both sources use)
TIER1 = ["ai2d", "geo170k", "geomverse", "geoqaplus", "mmk12", "cosynmath", "cosynchart", "cosyndiagram",
         "cosyntable", "wemath", "tqa", "visualwebinstruct", "chartqa", "arxivqa", "mmr1", "euclid", "geo3k",
         "mmopenr1", "bmmr", "scienceqa", "virl39k"]
TIER2 = ["pathvqa", "vqarad", "raven", "evochart", "infographicvqa", "aokvqa", "gqa", "iconqa", "vqav2",
         "visual7w", "tallyqa", "pixelreasoner", "multihop", "pixmo", "visualprobe", "visualsphinx",
         "puzzleqa", "llavacot", "zebracot"]
# Vero prefixes its sub-sets with their domain ("stem-ai2d_merged"); suffixes that name a processing step
DOMAIN_PREFIX = re.compile(r"^(?:stem|chart_?ocr|knowledge_?recognition|counting_?grounding_?search|"
                           r"grounding|spatial_?action|captioning\w*)[-_/]", re.IGNORECASE)
SUFFIXES = ("merged", "formatted", "difficulty", "filtered")
ALIASES = {"geometry3k": "geo3k", "multihopqa": "multihop", "cosyn400kmath": "cosynmath",
           "cosyn400kchart": "cosynchart", "cosyn400kdiagram": "cosyndiagram", "cosyn400ktable": "cosyntable",
           "infographicsvqa": "infographicvqa"}
FILTERS = ["tier", "cross-source", "pass_rate", "answer", "question", "duplicate", "image", "prompt", "cap"]


def canonical(name):
    """A sub-set's name as both sources can share it: domain prefix and processing suffixes dropped, lower
    case, letters and digits only, known aliases merged (Geometry3K = geo3k)."""
    name = DOMAIN_PREFIX.sub("", str(name).strip())
    key = re.sub(r"[^a-z0-9]", "", name.lower())
    for suffix in SUFFIXES:
        if key.endswith(suffix) and len(key) > len(suffix):
            key = key[: -len(suffix)]
    return ALIASES.get(key, key)


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_source(source, default):
    """(rows, base, identity) of a source: a local .jsonl ((file:line, row) pairs, its folder, which image
    paths are relative to, and its sha256) or the hub set's train split (the Dataset, "", its name and the
    `datasets` fingerprint)."""
    if source.endswith(".jsonl"):
        if not os.path.exists(source):
            raise FileNotFoundError(f"{source}: no such file")
        rows = [(f"{source}:{n}", r) for n, r in read_jsonl(source)]
        return rows, os.path.dirname(os.path.abspath(source)), {"sha256": sha256_file(source)}
    import datasets

    try:
        rows = datasets.load_dataset(source, split="train")
    except Exception as e:  # noqa: BLE001 - whatever the hub raises becomes one error naming the source
        raise RuntimeError(f"{default if source == default else source}: could not load split train "
                           f"from the hub ({type(e).__name__}: {str(e)[:200]})") from None
    return rows, "", {"hub": source, "fingerprint": getattr(rows, "_fingerprint", None)}


def _image_value(v):
    """A path, or a hub image: {"bytes", "path"} not decoded, or a decoded PIL image."""
    if isinstance(v, dict):
        return isinstance(v.get("bytes"), bytes) or isinstance(v.get("path"), str)
    return (isinstance(v, str) and v != "") or hasattr(v, "size")


def _chat(v):
    """Vero's prompt: chat messages with a role each, the first user message's content a string or a list of
    parts whose text parts hold a string."""
    if not isinstance(v, list) or not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in v):
        return False
    users = [m.get("content") for m in v if m["role"] == "user"]
    if not users:
        return False
    content = users[0]
    return isinstance(content, str) or (isinstance(content, list) and all(
        isinstance(p, dict) and (p.get("type") != "text" or isinstance(p.get("text"), str)) for p in content))


def _name(v):
    return isinstance(v, str) and v.strip() != ""


# (accepts the value, what was expected) per column read; a missing column reads as None
AN_ANSWER = "a string (null or blank: removed as 'answer')"
COLUMNS = {
    "vero": {
        "data_source": (_name, "a non-empty string naming the sub-set"),
        "answer": (lambda v: v is None or isinstance(v, str), AN_ANSWER),
        "prompt": (_chat, ("a list of chat messages {role, content} with a 'user' message whose content is "
                           "a string or a list of parts ({type: text, text: string}, {type: image, ...})")),
        "images": (lambda v: v is None or (isinstance(v, list) and all(map(_image_value, v))),
                   "a list of image paths (null or []: removed as 'image')"),
    },
    "mmfr": {
        "source": (_name, "a non-empty string naming the sub-set"),
        "answer": (lambda v: v is None or isinstance(v, str), AN_ANSWER),
        "pass_rate": (lambda v: v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)
                                             and 0 <= v <= 1),  # NaN fails 0 <= v
                      "a number in [0, 1] (null: removed as 'pass_rate')"),
        "question": (lambda v: isinstance(v, str), "a string"),
        "image": (lambda v: v is None or _image_value(v) or (isinstance(v, list)
                                                             and all(map(_image_value, v))),
                  "an image path or a list of them (null or []: removed as 'image')"),
        "id": (lambda v: v is None or (isinstance(v, (str, int)) and not isinstance(v, bool)),
               "a string, an integer or null"),
    },
}
CHEAP = {"vero": ("data_source", "answer"), "mmfr": ("source", "answer", "pass_rate")}


def check_row(row, kind, where, columns=None):
    """Stops, naming `where` (file:line, or the hub row), the column, what it holds and what was expected,
    when a column read (all of COLUMNS, or `columns`) is missing or mistyped; the values a filter removes
    (no answer, no pass_rate, no image) pass."""
    if not isinstance(row, dict):  # a bad row of a source is a ValueError, whatever is wrong with it
        raise ValueError(f"{where}: expected a JSON object (a row in {kind}'s columns), got "  # noqa: TRY004
                         f"{type(row).__name__}")
    for column in columns or COLUMNS[kind]:
        accepts, expected = COLUMNS[kind][column]
        value = row.get(column)
        if not accepts(value):
            held = ("missing" if column not in row
                    else f"{type(value).__name__} {json.dumps(value, default=str)[:80]}")
            raise ValueError(f"{where}: column {column!r} is {held}; expected {expected}")


def _vero_question(row):
    """The first user message's text parts (Vero's system prompt carries its own format rules: the closer
    replaces them)."""
    content = next(m["content"] for m in row["prompt"] if m["role"] == "user")
    if isinstance(content, str):
        return content
    return "\n".join(p["text"] for p in content if p.get("type") == "text")


def fields(row, kind):
    """(sub-set name, question, answer, image values, pass_rate) of a row of either source (check_row'd)."""
    if kind == "vero":
        return row["data_source"], _vero_question(row), row.get("answer"), row.get("images") or [], None
    images = row.get("image")
    images = images if isinstance(images, list) else [] if images is None else [images]
    return row["source"], row["question"], row.get("answer"), images, row.get("pass_rate")


def clean_question(text):
    from benchmarks.load import strip_directives

    return strip_directives(re.sub(r"<image>\s*", "", text))


def open_images(values, base, read):
    """RGB images of a row's image values (paths relative to `base`; a hub set's {"bytes", "path"} or
    decoded images), each read and decoded in full as train.py's loader checks them (data.read_image,
    decode_image); None when there is none or one fails (the 'image' filter). `read` gets the sha256 of each
    file read (None: unreadable) by the value the row gives, which a rerun checks again."""
    out = []
    for v in values:
        raw, name = v, "an image of the hub set"
        if isinstance(v, dict) and v.get("bytes"):
            raw, name = v["bytes"], v.get("path") or name
        elif isinstance(v, (str, dict)):
            given = v if isinstance(v, str) else v["path"]
            name = given if os.path.isabs(given) else os.path.join(base, given)
            try:
                raw = read_image(name)
            except ValueError:
                read[given] = None  # a file appearing here later would change the sub-set
                return None
            read[given] = hashlib.sha256(raw).hexdigest()
        try:
            out.append(decode_image(raw, name))
        except ValueError:
            return None
    return out or None


def tokenizer_identity(tokenizer):
    """What decides a prompt's length, by content: the tokenizer (its tokenizer.json), the chat template and
    the image processor's settings (the pixel bounds included)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    vocabulary = (backend.to_str() if backend is not None
                  else json.dumps(tokenizer.get_vocab(), sort_keys=True))
    text = "\n".join([vocabulary, str(tokenizer.chat_template), tokenizer.image_processor.to_json_string()])
    return {"sha256": hashlib.sha256(text.encode()).hexdigest()}


def load_tokenizer(name, pixels):
    """The student's tokenizer and image processor (the paper's pixel bounds), without the model's weights."""
    from transformers import AutoImageProcessor, AutoTokenizer

    from models import resolve_model_name

    name = resolve_model_name(name)
    tokenizer = AutoTokenizer.from_pretrained(name)
    tokenizer.image_processor = AutoImageProcessor.from_pretrained(
        name, size={"shortest_edge": pixels[0], "longest_edge": pixels[1]})
    return tokenizer


def prompt_tokens(tokenizer, question, image_paths):
    from rollout import encode_prompt

    ids, _ = encode_prompt(tokenizer, plain_prompt({"question": question, "images": image_paths}))
    return len(ids)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--vero", default=VERO, help="Vero-600k: hub id or local .jsonl in its columns")
    p.add_argument("--mmfr", default=MMFR,
                   help="MMFineReason-SFT-586K: hub id or local .jsonl in its columns")
    p.add_argument("--tokenizer", help="the student whose prompt length is checked (its tokenizer + image "
                                       "processor); without it the prompt-length filter is off, and said so")
    p.add_argument("--tier1", default=",".join(TIER1), help="canonical sub-set names capped at --cap1")
    p.add_argument("--tier2", default=",".join(TIER2), help="canonical sub-set names capped at --cap2")
    p.add_argument("--cap1", type=number(int, 1), default=2800)
    p.add_argument("--cap2", type=number(int, 1), default=1400)
    p.add_argument("--max-pass-rate", type=number(float, 0, 1), default=0.5,
                   help="MMFineReason rows above it go")
    p.add_argument("--max-answer-chars", type=number(int, 1), default=512)
    p.add_argument("--min-image-side", type=number(int, 1), default=100)
    p.add_argument("--max-prompt-tokens", type=number(int, 1), default=4096)
    p.add_argument("--image-min-pixels", type=number(int, 1), default=256 * 32 * 32)
    p.add_argument("--image-max-pixels", type=number(int, 1), default=1280 * 32 * 32)
    p.add_argument("--dedup", choices=["image_text", "text", "none"], default="image_text",
                   help="duplicate key: question + answer + first image's pixels, question + answer, "
                        "or no check")
    p.add_argument("--seed", type=number(int), default=0,
                   help="the shuffle that decides which rows fill a cap")
    args = p.parse_args(argv)
    if args.image_max_pixels < args.image_min_pixels:
        p.error(f"argument --image-max-pixels: {args.image_max_pixels} is not allowed: expected at least "
                f"--image-min-pixels ({args.image_min_pixels})")
    return args


def candidates(args, tiers, sources):
    """Filters 1-4 over both sources: {(kind, subset): [index, ...]} and the removals, Vero first. A local
    source's rows are checked whole here (check_row), a hub set's cheap columns only."""
    removed = {k: Counter() for k in ("vero", "mmfr")}
    seen = {k: 0 for k in ("vero", "mmfr")}
    pools, vero_subsets = defaultdict(list), set()
    for kind, source in (("vero", args.vero), ("mmfr", args.mmfr)):
        rows, cheap = sources[kind][0], CHEAP[kind]
        # the scan reads these columns only: no image is decoded before a row is a candidate
        local = isinstance(rows, list)
        view = rows if local else rows.select_columns(list(cheap))
        for i in tqdm(range(len(view)), desc=f"scan {kind}", unit="row"):
            where, row = view[i] if local else (f"{source}[train][{i}]", view[i])
            check_row(row, kind, where, None if local else cheap)
            seen[kind] += 1
            name, answer, pass_rate = [row.get(c) for c in cheap] + [None] * (3 - len(cheap))
            subset = canonical(name)
            if subset not in tiers:
                removed[kind]["tier"] += 1
                continue
            if kind == "vero":
                vero_subsets.add(subset)
            elif subset in vero_subsets:
                removed[kind]["cross-source"] += 1
                continue
            if kind == "mmfr" and (pass_rate is None or pass_rate > args.max_pass_rate):
                removed[kind]["pass_rate"] += 1
                continue
            if answer is None or not answer.strip() or len(answer.strip()) > args.max_answer_chars:
                removed[kind]["answer"] += 1
                continue
            pools[(kind, subset)].append(i)
    return pools, removed, seen


def row_at(sources, args, kind, i):
    """A source's row i; a hub row's other columns are checked here (a local row's were in the scan)."""
    rows = sources[kind][0]
    if isinstance(rows, list):
        return rows[i][1]
    check_row(rows[i], kind, f"{args.vero if kind == 'vero' else args.mmfr}[train][{i}]")
    return rows[i]


def _identity(identity):
    if identity is None:
        return "none"
    return f"sha256 {identity['sha256'][:12]}" if "sha256" in identity else json.dumps(identity)


def stale(state, settings, inputs, args, bases):
    """What changed since the done sub-sets of OUT were built: a setting, a source file or the tokenizer (by
    content), or an image file one of them read (each read and hashed again); [] when nothing did."""
    problems = [f"--{k.replace('_', '-')} {state['settings'].get(k)!r} -> {v!r}"
                for k, v in settings.items() if state["settings"].get(k) != v]
    saved = state.get("inputs")
    if saved is None:
        return problems + ["no record of the inputs it was built from (an older builder wrote it)"]
    names = {"vero": args.vero, "mmfr": args.mmfr, "tokenizer": args.tokenizer}
    for key, now in inputs.items():
        if saved.get(key) != now:
            how = f"{_identity(saved.get(key))} -> {_identity(now)}"
            problems.append(f"--{key} {names[key] or '(none)'} changed ({how})")
    changed = defaultdict(list)  # (path, sha256 then, now) -> the sub-sets that read it
    for label, done in tqdm(sorted(state["done"].items()), desc="check images", unit="set"):
        base = bases[label.split("-", 1)[0]]
        for given, was in done["images"].items():
            path = given if os.path.isabs(given) else os.path.join(base, given)
            try:
                now = hashlib.sha256(read_image(path)).hexdigest()
            except ValueError:
                now = None
            if now != was:
                changed[(path, was or "unreadable", now or "unreadable")].append(label)
    problems += [f"image {path} (read by {', '.join(labels)}) changed (sha256 {was[:12]} -> {now[:12]})"
                 for (path, was, now), labels in list(changed.items())[:3]]
    if len(changed) > 3:
        problems.append(f"{len(changed) - 3} more images changed")
    return problems


def build(args, log=print):
    tiers = {**{n: 2 for n in args.tier2.split(",") if n}, **{n: 1 for n in args.tier1.split(",") if n}}
    caps = {1: args.cap1, 2: args.cap2}
    os.makedirs(os.path.join(args.out, "parts"), exist_ok=True)
    state_path = os.path.join(args.out, "state.json")
    state = {"done": {}}
    if os.path.exists(state_path):
        with open(state_path) as f:
            state = json.load(f)
    # the sources and the tokenizer count by content (inputs), so a moved file is the same input
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "vero", "mmfr", "tokenizer")}
    tokenizer = (load_tokenizer(args.tokenizer, (args.image_min_pixels, args.image_max_pixels))
                 if args.tokenizer else None)
    if tokenizer is None:
        log("[warning] no --tokenizer: the prompt-length filter (<= "
            f"{args.max_prompt_tokens} tokens with image tokens and the closer) is off")
    sources = {"vero": load_source(args.vero, VERO), "mmfr": load_source(args.mmfr, MMFR)}
    bases = {kind: source[1] for kind, source in sources.items()}
    inputs = {"vero": sources["vero"][2], "mmfr": sources["mmfr"][2],
              "tokenizer": tokenizer_identity(tokenizer) if tokenizer is not None else None}
    if state["done"]:
        problems = stale(state, settings, inputs, args, bases)
        if problems:
            raise ValueError(
                f"{state_path}: its {len(state['done'])} done sub-sets were built with other settings or "
                f"inputs: {'; '.join(problems)}. Kept, their rows would mix with rows of the new ones: "
                f"restore what changed to resume, or build into a new --out (or delete {args.out} to rebuild "
                "there)")
    else:  # nothing built yet: the new settings and inputs apply as they are
        state = {"done": {}}
    state["settings"], state["inputs"] = settings, inputs
    pools, removed, seen = candidates(args, tiers, sources)
    keys = set()  # duplicate keys of every row kept, done sub-sets included (Vero's sub-sets come first)
    for done in state["done"].values():
        keys.update(done["keys"])
    order = sorted(pools, key=lambda ks: (ks[0] != "vero", ks[1]))
    for kind, subset in tqdm(order, desc="sub-sets", unit="set"):
        part = os.path.join(args.out, "parts", f"{kind}-{subset}.jsonl")
        label = f"{kind}-{subset}"
        if label in state["done"]:
            for k, v in state["done"][label]["removed"].items():
                removed[kind][k] += v
            continue
        indices = list(pools[(kind, subset)])
        random.Random(f"{args.seed}:{label}").shuffle(indices)  # which rows fill the cap [ours]
        cap, kept, gone, mine, read = caps[tiers[subset]], [], Counter(), [], {}
        folder = os.path.join(args.out, "images", label)
        shutil.rmtree(folder, ignore_errors=True)  # images of a build killed inside this sub-set are stale
        os.makedirs(folder)
        for n, i in enumerate(indices):
            if len(kept) >= cap:
                gone["cap"] += len(indices) - n
                break
            row = row_at(sources, args, kind, i)
            _, question, answer, values, _ = fields(row, kind)
            question, answer = clean_question(question), answer.strip()
            if not question:
                gone["question"] += 1
                continue
            images = open_images(values, bases[kind], read)
            key = None
            if args.dedup != "none":
                digest = (hashlib.sha1(images[0].tobytes()).hexdigest()
                          if images and args.dedup == "image_text" else "")
                key = hashlib.sha1(json.dumps([" ".join(question.lower().split()), answer.lower(), digest])
                                   .encode()).hexdigest()
                if key in keys:
                    gone["duplicate"] += 1
                    continue
            if images is None or min(min(im.size) for im in images) < args.min_image_side:
                gone["image"] += 1
                continue
            paths = []
            for k, image in enumerate(images):
                paths.append(os.path.join(folder, f"{i}_{k}.png"))
                image.save(paths[-1] + ".tmp.png")
                os.replace(paths[-1] + ".tmp.png", paths[-1])
            if tokenizer is not None and prompt_tokens(tokenizer, question, paths) > args.max_prompt_tokens:
                gone["prompt"] += 1
                for path in paths:
                    os.remove(path)
                continue
            if key is not None:
                keys.add(key)
                mine.append(key)
            row_id = row.get("id") if kind == "mmfr" and row.get("id") is not None else i
            kept.append({"id": f"{kind}:{subset}:{row_id}", "question": question, "answer": answer,
                         "image": [os.path.relpath(p, args.out) for p in paths], "source": kind,
                         "subset": subset, "tier": tiers[subset]})
        with open(part + ".tmp", "w") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in kept)
        os.replace(part + ".tmp", part)
        for k, v in gone.items():
            removed[kind][k] += v
        state["done"][label] = {"kept": len(kept), "removed": dict(gone), "keys": mine, "images": read}
        with open(state_path + ".tmp", "w") as f:
            json.dump(state, f)
        os.replace(state_path + ".tmp", state_path)
    return finish(args, state, removed, seen, log)


def finish(args, state, removed, seen, log):
    """The JSONL train.py reads (every done part, in order) and the summary of what each filter removed."""
    out = os.path.join(args.out, "zppo77k.jsonl")
    total = 0
    with open(out + ".tmp", "w") as f:
        for label in sorted(state["done"], key=lambda s: (not s.startswith("vero-"), s)):
            with open(os.path.join(args.out, "parts", f"{label}.jsonl")) as part:
                for line in part:
                    f.write(line)
                    total += 1
    os.replace(out + ".tmp", out)
    kept = {k: sum(d["kept"] for lab, d in state["done"].items() if lab.startswith(k + "-"))
            for k in ("vero", "mmfr")}
    summary = {"rows": seen, "removed": {k: {f: removed[k][f] for f in FILTERS} for k in removed},
               "kept": kept, "total": total,
               "per_subset": {lab: d["kept"] for lab, d in sorted(state["done"].items())},
               "prompt_filter": bool(args.tokenizer)}
    lines = ["| filter | Vero-600k | MMFineReason |", "| --- | --- | --- |",
             f"| rows read | {seen['vero']} | {seen['mmfr']} |"]
    lines += [f"| removed: {f} | {removed['vero'][f]} | {removed['mmfr'][f]} |" for f in FILTERS]
    lines += [f"| kept | {kept['vero']} | {kept['mmfr']} |", f"total: {total} rows in {out}"]
    if not args.tokenizer:
        lines.append("prompt-length filter off (no --tokenizer)")
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    with open(os.path.join(args.out, "summary.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    log("\n".join(lines))
    return summary


if __name__ == "__main__":
    build(parse_args())
