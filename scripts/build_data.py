"""Build ZPPO-77K, the paper's training set (its appendix B.1; EVAL.md "Training data"),
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
  5. duplicate    the same question, answer and first image as a row already kept (Vero's sub-sets first)
                  [ours]
  6. image        no readable image, or min(h, w) < 100 pixels
  7. prompt       the student's prompt (chat template + image tokens + text + closer) over 4,096 tokens
  8. cap          candidates left once a sub-set has its cap

Where the paper is silent (which rows fill a cap: a seeded shuffle; the per-example duplicate key; the
canonical names) the choice is ours and a flag. Resumable: each sub-set is written to OUT/parts/ and marked
done in OUT/state.json; a rerun skips done sub-sets and images already written. Outputs: OUT/zppo77k.jsonl
(id, question, answer, image, source, subset, tier), OUT/images/, OUT/summary.json and OUT/summary.md.
"""
import argparse
import hashlib
import json
import os
import random
import re
import sys
from collections import Counter, defaultdict

from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from data import read_jsonl
from reformulate import plain_prompt

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
FILTERS = ["tier", "cross-source", "pass_rate", "answer", "duplicate", "image", "prompt", "cap"]


def canonical(name):
    """A sub-set's name as both sources can share it: domain prefix and processing suffixes dropped, lower
    case, letters and digits only, known aliases merged (Geometry3K = geo3k)."""
    name = DOMAIN_PREFIX.sub("", str(name).strip())
    key = re.sub(r"[^a-z0-9]", "", name.lower())
    for suffix in SUFFIXES:
        if key.endswith(suffix) and len(key) > len(suffix):
            key = key[: -len(suffix)]
    return ALIASES.get(key, key)


def source_rows(source, default):
    """(where, row) over a source: a local .jsonl (rows in the hub's columns) or the hub set (train split)."""
    if source.endswith(".jsonl"):
        if not os.path.exists(source):
            raise FileNotFoundError(f"{source}: no such file")
        base = os.path.dirname(os.path.abspath(source))
        return [(f"{source}:{n}", dict(r, _base=base)) for n, r in read_jsonl(source)], None
    import datasets

    try:
        rows = datasets.load_dataset(source, split="train")
    except Exception as e:  # noqa: BLE001 - whatever the hub raises becomes one error naming the source
        raise RuntimeError(f"{default if source == default else source}: could not load split train "
                           f"from the hub ({type(e).__name__}: {str(e)[:200]})") from None
    return None, rows


def _vero_question(row):
    """The user message's text parts (Vero's system prompt carries its own format rules: the closer replaces
    them)."""
    for message in row["prompt"]:
        if message["role"] == "user":
            content = message["content"]
            if isinstance(content, str):
                return content
            return "\n".join(p.get("text") or "" for p in content if p.get("type") == "text")
    return ""


def fields(row, kind):
    """(sub-set name, question, answer, image values, pass_rate) of a row of either source."""
    if kind == "vero":
        images = row.get("images") or []
        return row["data_source"], _vero_question(row), row.get("answer"), images, None
    images = row.get("image")
    images = images if isinstance(images, list) else [] if images is None else [images]
    return row["source"], str(row["question"]), row.get("answer"), images, row.get("pass_rate")


def clean_question(text):
    from benchmarks.load import strip_directives

    return strip_directives(re.sub(r"<image>\s*", "", text))


def open_images(values, base):
    """PIL images of a row's image values (hub images, {"bytes", "path"} dicts or paths); None if one
    fails."""
    import io

    from PIL import Image

    out = []
    for v in values:
        try:
            if hasattr(v, "size"):
                image = v
            elif isinstance(v, dict):  # a hub image not decoded: {"bytes", "path"}
                image = Image.open(io.BytesIO(v["bytes"]) if v.get("bytes")
                                   else os.path.join(base, v["path"]))
            else:
                image = Image.open(v if os.path.isabs(v) else os.path.join(base, v))
            image.load()
        except (OSError, KeyError, TypeError, ValueError):
            return None
        out.append(image.convert("RGB"))
    return out or None


def load_tokenizer(name, pixels):
    """The student's tokenizer and image processor (the paper's pixel bounds), without the model's weights."""
    from transformers import AutoImageProcessor, AutoTokenizer

    from rollout import resolve_model_name

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
    p.add_argument("--cap1", type=int, default=2800)
    p.add_argument("--cap2", type=int, default=1400)
    p.add_argument("--max-pass-rate", type=float, default=0.5, help="MMFineReason rows above it go")
    p.add_argument("--max-answer-chars", type=int, default=512)
    p.add_argument("--min-image-side", type=int, default=100)
    p.add_argument("--max-prompt-tokens", type=int, default=4096)
    p.add_argument("--image-min-pixels", type=int, default=256 * 32 * 32)
    p.add_argument("--image-max-pixels", type=int, default=1280 * 32 * 32)
    p.add_argument("--dedup", choices=["image_text", "text", "none"], default="image_text",
                   help="duplicate key: question + answer + first image's pixels, question + answer, "
                        "or no check")
    p.add_argument("--seed", type=int, default=0, help="the shuffle that decides which rows fill a cap")
    return p.parse_args(argv)


def candidates(args, tiers, log):
    """Filters 1-4 over both sources: {subset: [(kind, index), ...]} and the removals, Vero first."""
    removed = {k: Counter() for k in ("vero", "mmfr")}
    seen = {k: 0 for k in ("vero", "mmfr")}
    pools, vero_subsets, tables = defaultdict(list), set(), {}
    for kind, source in (("vero", args.vero), ("mmfr", args.mmfr)):
        local, hub = source_rows(source, VERO if kind == "vero" else MMFR)
        tables[kind] = local if local is not None else hub
        # the scan reads these columns only: no image is decoded before a row is a candidate
        cheap = CHEAP[kind]
        view = [r for _, r in local] if local is not None else hub.select_columns(list(cheap))
        for i in tqdm(range(len(view)), desc=f"scan {kind}", unit="row"):
            row = view[i]
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
            if kind == "mmfr" and (pass_rate is None or float(pass_rate) > args.max_pass_rate):
                removed[kind]["pass_rate"] += 1
                continue
            if answer is None or not str(answer).strip() or len(str(answer).strip()) > args.max_answer_chars:
                removed[kind]["answer"] += 1
                continue
            pools[(kind, subset)].append(i)
    return pools, removed, seen, tables


CHEAP = {"vero": ("data_source", "answer"), "mmfr": ("source", "answer", "pass_rate")}


def row_at(tables, kind, i):
    table = tables[kind]
    return table[i][1] if isinstance(table, list) else table[i]


def build(args, log=print):
    tiers = {**{n: 2 for n in args.tier2.split(",") if n}, **{n: 1 for n in args.tier1.split(",") if n}}
    caps = {1: args.cap1, 2: args.cap2}
    os.makedirs(os.path.join(args.out, "parts"), exist_ok=True)
    state_path = os.path.join(args.out, "state.json")
    if os.path.exists(state_path):
        with open(state_path) as f:
            state = json.load(f)
    else:
        state = {"done": {}}
    settings = {k: v for k, v in vars(args).items() if k != "out"}
    if state.get("settings", settings) != settings:
        raise ValueError(f"{state_path}: written with other settings ({state['settings']}); use a new --out")
    state["settings"] = settings
    tokenizer = (load_tokenizer(args.tokenizer, (args.image_min_pixels, args.image_max_pixels))
                 if args.tokenizer else None)
    if tokenizer is None:
        log("[warning] no --tokenizer: the prompt-length filter (<= "
            f"{args.max_prompt_tokens} tokens with image tokens and the closer) is off")
    pools, removed, seen, tables = candidates(args, tiers, log)
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
        cap, kept, gone, mine = caps[tiers[subset]], [], Counter(), []
        folder = os.path.join(args.out, "images", label)
        os.makedirs(folder, exist_ok=True)
        for n, i in enumerate(indices):
            if len(kept) >= cap:
                gone["cap"] += len(indices) - n
                break
            row = row_at(tables, kind, i)
            _, question, answer, values, _ = fields(row, kind)
            question, answer = clean_question(question), str(answer).strip()
            images = open_images(values, row.get("_base", "") if isinstance(row, dict) else "")
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
            for k, image in enumerate(images):  # written once; a rerun keeps them
                paths.append(os.path.join(folder, f"{i}_{k}.png"))
                if not os.path.exists(paths[-1]):
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
        state["done"][label] = {"kept": len(kept), "removed": dict(gone), "keys": mine}
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
