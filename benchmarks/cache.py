"""What lets an evaluation survive being killed, and keeps two of them apart.

Row cache: every finished chunk of a benchmark (score.evaluate) is appended, as one JSON line, to a file keyed
by (model, benchmark, sampling): the model's identity (its path and the size and modification time of its
weight files, or its hub name), the benchmark, and every setting that changes what is sampled (k, the token
cap, the sampling fields, the seed, the pixel bounds, the engine). A line holds its rows' responses and
verdicts, each row found again by its id and everything its prompt held; a rerun of the same command takes
those rows from the file and generates only the rest. A verdict is reused only when the judge, the gold answer
and the scorers' version are the same (score.SCORER_VERSION); otherwise the kept responses are scored again.
A line cut by a kill is dropped when read. Default folder: ~/.cache/zppo/eval (eval.py --cache-dir,
--no-cache).

Output lock: eval.py holds an exclusive flock for each file it writes (--out, --responses, the sample logs)
until it ends, on a lock file named by the output's absolute path in ~/.cache/zppo/locks (nothing is left
beside the outputs, and the file is deleted when the run ends); a second eval.py on the same output stops at
once, naming the output and the process that holds it. The kernel releases a flock when its process dies, so
a killed run never leaves a stale lock.
"""
import fcntl
import hashlib
import json
import os
import re

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".json")


def cache_root():
    return os.path.join(os.path.expanduser("~"), ".cache", "zppo", "eval")


def model_fingerprint(model):
    """The identity of a model for the cache: a folder's weight and config files (name, size, modification
    time), a file's (a .gguf), else the name itself (a hub id)."""
    if os.path.isdir(model):
        files = sorted(f for f in os.listdir(model) if f.endswith(WEIGHT_SUFFIXES))
        stats = [(f, os.path.getsize(os.path.join(model, f)), os.stat(os.path.join(model, f)).st_mtime_ns)
                 for f in files]
        return {"path": os.path.abspath(model), "files": stats}
    if os.path.isfile(model):
        stat = os.stat(model)
        return {"path": os.path.abspath(model), "files": [(os.path.basename(model), stat.st_size,
                                                           stat.st_mtime_ns)]}
    return {"name": model}


def cache_file(root, model, benchmark, settings):
    """ROOT/MODEL-HASH/BENCHMARK-HASH.jsonl: one folder per model, one file per benchmark and setting."""
    fingerprint = model_fingerprint(model)
    model_hash = _digest(fingerprint)
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", os.path.basename(os.path.normpath(model)))[:60] or "model"
    setting_hash = _digest({"model": fingerprint, "benchmark": benchmark, **settings})
    return os.path.join(root, f"{slug}-{model_hash}", f"{benchmark}-{setting_hash}.jsonl")


def _digest(obj):
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


class RowCache:
    """The finished rows of one benchmark under one setting: `get(key)` -> the row's entry or None,
    `put(rows)` appends a finished chunk. `judge` names the judge the verdicts came from (score.evaluate
    compares it)."""

    def __init__(self, path, judge=None):
        self.path, self.judge, self.rows = path, judge, {}
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                for line in f:
                    try:
                        chunk = json.loads(line)
                    except ValueError:  # a line a kill cut short: its chunk is generated again
                        continue
                    self.rows.update({row["key"]: row for row in chunk.get("rows", [])})

    def get(self, key):
        return self.rows.get(key)

    def put(self, rows):
        """One line for the chunk, appended and flushed to disk under an exclusive lock (two runs of the same
        model and benchmark with different outputs share this file)."""
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        line = json.dumps({"rows": rows}, ensure_ascii=False) + "\n"
        with open(self.path, "a", encoding="utf-8") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
        self.rows.update({row["key"]: row for row in rows})


class OutputLocked(RuntimeError):
    """An output another eval.py is writing."""


def lock_root():
    return os.path.join(os.path.expanduser("~"), ".cache", "zppo", "locks")


def lock_outputs(paths, root=None):
    """Exclusive locks for every output path (None skipped), held by the returned open lock files until
    release_outputs or the end of the process. A path another process is writing stops the run:
    OutputLocked naming the path and the other process."""
    held = []
    for path in [p for p in paths if p]:
        os.makedirs(root or lock_root(), exist_ok=True)
        name = hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:20]
        lock_path = os.path.join(root or lock_root(), f"{name}.lock")
        while True:
            f = open(lock_path, "a+")  # noqa: SIM115 (held open for the whole run: the lock lives with it)
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                owner = f.read().strip() or "another process"
                f.close()
                release_outputs(held)
                raise OutputLocked(f"{path} is being written by another eval.py ({owner}): wait for it to "
                                   f"finish or choose another output (lock {lock_path})") from None
            # the holder deletes its lock file when it ends: a lock taken on a file deleted meanwhile guards
            # nothing, so take it again on the file now at that path
            try:
                if os.stat(lock_path).st_ino == os.fstat(f.fileno()).st_ino:
                    break
            except FileNotFoundError:
                pass
            f.close()
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}, writing {os.path.abspath(path)}")
        f.flush()
        held.append(f)
    return held


def release_outputs(held):
    """The lock files deleted while still held, then closed (a run killed instead leaves its file: the
    kernel has released the lock, and the next run takes it)."""
    for f in held:
        try:
            os.unlink(f.name)
        except FileNotFoundError:
            pass
        f.close()
    held.clear()
