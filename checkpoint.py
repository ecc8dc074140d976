"""The run folder: config.json, metrics.jsonl, the optional dumps, and checkpoints that hold everything
a run needs to continue exactly, written so that a crash never leaves half of one and a run is never lost.

A checkpoint is a folder OUT/checkpoints/step_NNNNNN with the model and tokenizer (save_pretrained,
safetensors), trainer_state.pt (optimizer, torch and Python RNG states) and state.json (step, data
position, replay buffer, config). It is written under a temporary name, flushed to disk and renamed
when complete; OUT/latest names the newest one. A fresh run never writes into a folder that holds
another run (unless told to replace it), and resuming skips a damaged checkpoint for the one before.
"""
import json
import os
import re
import shutil
import socket
import warnings
from dataclasses import asdict

import torch

from config import RUN_FILES, redact_url
from data import data_identity
from models import load_optimizer_state, local, model_state, optimizer_state, rank_rngs
from zppo import reduce_sum

_STEP_DIR = re.compile(r"step_(\d+)")
# flags whose change on resume is expected and not worth a warning
_RESUME_FLAGS = {"out_dir", "resume", "steps", "overwrite"}


def atomic_write(path, text):
    """`path` replaced by `text` all at once (written beside it, flushed, renamed): a crash leaves the old
    file or the new one, never half of one."""
    with open(path + ".tmp", "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(path + ".tmp", path)
    fsync(os.path.dirname(path) or ".")


def fsync(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _alive(pid):
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, another user's
        return True
    return True


def take_lock(out_dir):
    """OUT/lock: one process writes a run folder. It names the pid and host of the process that holds it; a
    second train.py on the folder (a fresh run, or a --resume of a live run) stops. A lock left by a process
    that died without releasing it (kill -9, a power cut) is taken over, with a warning. Returns its path."""
    os.makedirs(out_dir, exist_ok=True)
    path, host = os.path.join(out_dir, "lock"), socket.gethostname()
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                with open(path) as f:
                    pid, owner = f.read().split()[:2]
                pid = int(pid)
            except (OSError, ValueError):  # empty or garbled: its writer died while writing it
                pid, owner = None, host
            if pid is not None and owner != host:
                raise SystemExit(f"train.py: {out_dir} is locked by pid {pid} on {owner} ({path}): another "
                                 "train.py writes this run; if none is running there, delete that file"
                                 ) from None
            if pid is not None and _alive(pid) and pid != os.getpid():
                raise SystemExit(f"train.py: {out_dir} is locked by a live process, pid {pid} ({path}): "
                                 "another train.py writes this run there; wait for it to end or stop it, or "
                                 f"choose another --out-dir (if pid {pid} is no train.py, delete that file)"
                                 ) from None
            warnings.warn(f"{path}: taking over the stale lock of pid {pid} (no such process: it ended "
                          "without releasing it)")
            try:
                os.remove(path)
            except FileNotFoundError:
                pass
            continue
        with os.fdopen(fd, "w") as f:
            f.write(f"{os.getpid()} {host}\n")
        return path
    raise SystemExit(f"train.py: could not take the lock {path}: other processes keep taking it")


def release_lock(path):
    """Remove the lock if this process holds it."""
    try:
        with open(path) as f:
            mine = f.read().split()[:1] == [str(os.getpid())]
        if mine:
            os.remove(path)
    except (OSError, TypeError):
        pass


def step_of(name):
    return int(_STEP_DIR.fullmatch(name).group(1))


def config_record(cfg):
    """The flags as config.json, state.json, resumes.jsonl and the trackers get them: the teacher's URL
    without its key (redact_url); the key's variable is recorded by its name."""
    return dict(asdict(cfg), teacher_url=redact_url(cfg.teacher_url))


def clear_run(out_dir):
    """--overwrite: delete the previous run's files (only those: the folder may hold other things)."""
    for name in RUN_FILES + ("config.json",):
        path = os.path.join(out_dir, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)


def _fsync_tree(path):
    """Every file and folder under path on disk, so a rename after it never publishes a half-written file."""
    for folder, _, files in os.walk(path):
        for name in files:
            fsync(os.path.join(folder, name))
        fsync(folder)


def resume_problems(cfg, path):
    """Why --resume cannot continue the run of the checkpoint at `path` as asked ([] when it can): its data
    file changed (replayed questions would be graded against answers the file no longer has, and the data
    position would point into other rows), or the run is already at or past --steps."""
    with open(os.path.join(path, "state.json")) as f:
        state = json.load(f)
    problems = []
    saved, now = state.get("data"), data_identity(cfg.data)
    if saved and saved.get("sha256") and saved.get("sha256") != now.get("sha256"):
        problems.append(f"--data {cfg.data}: the data file changed since {path} was written (sha256 "
                        f"{saved['sha256'][:12]} -> {(now.get('sha256') or 'none')[:12]}): the buffer and "
                        f"the data position refer to the rows of {saved['path']} as they were; restore that "
                        "file, or start a fresh run on the new one (another --out-dir)")
    pending = pending_eval(os.path.join(cfg.out_dir, "metrics.jsonl"), state["step"])
    if state["step"] >= cfg.steps and not pending:  # an evaluation a crash interrupted is still to do
        problems.append(f"--steps {cfg.steps}: the run is already at step {state['step']} ({path}), nothing "
                        f"to do; give --steps above {state['step']} to continue it")
    return problems


def pending_eval(log_path, step):
    """Whether the step's line of metrics.jsonl says its evaluation started and never ended (eval/pending: a
    crash inside it): a resume runs it first."""
    if not os.path.exists(log_path):
        return False
    with open(log_path) as f:
        for line in f:
            try:
                row = json.loads(line)
            except ValueError:  # a line a crash cut short (open_run drops it)
                continue
            if isinstance(row, dict) and row.get("step") == step and row.get("eval/pending"):
                return True
    return False


def save_checkpoint(cfg, step, model, state_dict, tokenizer, optim_state, buffer, data_pos, rng, accelerator,
                    rank_rngs=None):
    root = os.path.join(cfg.out_dir, "checkpoints")
    name = f"step_{step:06d}"
    final, tmp = os.path.join(root, name), os.path.join(root, f"{name}.tmp")
    for old in os.listdir(root) if os.path.isdir(root) else []:  # partial ones of a crash hold disk space
        if old.endswith(".tmp") and _STEP_DIR.fullmatch(old[:-4]):
            shutil.rmtree(os.path.join(root, old), ignore_errors=True)
    try:
        accelerator.unwrap_model(model).save_pretrained(tmp, state_dict=state_dict, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if getattr(tokenizer, "image_processor", None) is not None:  # a vision-language model's, beside it
            tokenizer.image_processor.save_pretrained(tmp)
        torch.save({"optimizer": optim_state, "torch_rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                    "python_rng": rng.getstate(), "rank_rngs": rank_rngs},
                   os.path.join(tmp, "trainer_state.pt"))
        # every file and its size: one missing or cut short (tokenizer, chat template, config) marks it
        # damaged
        files = {os.path.relpath(os.path.join(d, name), tmp): os.path.getsize(os.path.join(d, name))
                 for d, _, names in os.walk(tmp) for name in names}
        with open(os.path.join(tmp, "state.json"), "w") as f:
            json.dump({"step": step, "data_epoch": data_pos[0], "data_pos": data_pos[1],
                       "buffer": buffer.state_dict(), "config": config_record(cfg),
                       "data": data_identity(cfg.data), "files": files}, f)
        _fsync_tree(tmp)
    except (OSError, RuntimeError) as e:  # a full disk: torch says only "unexpected pos", safetensors less
        size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(tmp) for f in fs)
        shutil.rmtree(tmp, ignore_errors=True)  # never leave the partial checkpoint filling the disk
        free = shutil.disk_usage(root).free
        raise OSError(f"step {step}: writing the checkpoint {tmp} failed ({type(e).__name__}: {e}); "
                      f"{free / 2**20:.0f} MiB are free on its disk after deleting the partial checkpoint "
                      f"({size / 2**20:.0f} MiB "
                      f"written){' - the disk is full' if free < 2 * size + 2**20 else ''}. "
                      f"{os.path.join(cfg.out_dir, 'latest')} still names the last complete checkpoint: free "
                      f"space (or lower --keep-checkpoints), then --resume {cfg.out_dir}") from e
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    fsync(root)
    atomic_write(os.path.join(cfg.out_dir, "latest"), name)
    # keep the one just written and the newest keep_checkpoints - 1 before it. Checkpoints after it (left by a
    # run resumed from an earlier step) are not counted and not deleted: this run replaces them as it gets
    # there
    older = sorted((d for d in os.listdir(root) if _STEP_DIR.fullmatch(d) and step_of(d) < step), key=step_of)
    for old in older[:max(0, len(older) - (cfg.keep_checkpoints - 1))] if cfg.keep_checkpoints > 0 else []:
        shutil.rmtree(os.path.join(root, old), ignore_errors=True)
    return final


def safetensors_problem(path):
    """None when the file's header parses and the file holds every byte the header promises."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            # the format: 8 bytes of header length, the header, the tensors' bytes at the offsets it lists
            n_header = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(n_header))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        if 8 + n_header + end > size:
            return f"{path}: truncated ({size} bytes of {8 + n_header + end})"
    except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
        return f"{path}: unreadable ({type(e).__name__}: {e})"
    return None


def checkpoint_problem(path):
    """None for a complete checkpoint folder, else the first damaged or missing file and what is wrong."""
    for name in ("state.json", "trainer_state.pt", "config.json"):
        if not os.path.isfile(os.path.join(path, name)):
            return f"{os.path.join(path, name)}: missing"
    try:
        with open(os.path.join(path, "state.json")) as f:
            state = json.load(f)
    except ValueError as e:
        return f"{os.path.join(path, 'state.json')}: unreadable ({e})"
    keys = {"step", "data_epoch", "data_pos", "buffer", "config"}
    missing = keys - set(state) if isinstance(state, dict) else keys
    if missing:
        return f"{os.path.join(path, 'state.json')}: no {', '.join(sorted(missing))}"
    # what the save wrote (checkpoints written since state.json lists its files)
    for name, size in (state.get("files") or {}).items():
        file = os.path.join(path, name)
        if not os.path.isfile(file):
            return f"{file}: missing"
        if os.path.getsize(file) != size:
            return f"{file}: {os.path.getsize(file)} bytes, {size} when it was written (truncated or changed)"
    try:  # memory-mapped: the file's structure is read, the tensors are not
        torch.load(os.path.join(path, "trainer_state.pt"), weights_only=False, mmap=True, map_location="cpu")
    except Exception as e:  # noqa: BLE001 (a truncated zip, a broken pickle: whatever torch raises)
        return f"{os.path.join(path, 'trainer_state.pt')}: unreadable ({type(e).__name__}: {e})"
    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.isfile(index):
        try:
            with open(index) as f:
                shards = sorted(set(json.load(f)["weight_map"].values()))
        except (ValueError, KeyError, TypeError) as e:
            return f"{index}: unreadable ({type(e).__name__}: {e})"
    elif os.path.isfile(os.path.join(path, "model.safetensors")):
        shards = ["model.safetensors"]
    else:
        return f"{os.path.join(path, 'model.safetensors')}: missing"
    for shard in shards:
        if not os.path.isfile(os.path.join(path, shard)):
            return f"{os.path.join(path, shard)}: missing"
        problem = safetensors_problem(os.path.join(path, shard))
        if problem:
            return problem
    return None


def find_checkpoint(path):
    """The checkpoint --resume continues from: `path` itself when it is a checkpoint folder, else the run
    folder's checkpoint that `latest` names, or when that one is damaged, the newest complete one before it
    (with a warning naming each damaged file)."""
    if os.path.exists(os.path.join(path, "trainer_state.pt")):
        problem = checkpoint_problem(path)
        if problem:
            raise ValueError(f"--resume {path}: damaged checkpoint ({problem}); --resume with its run folder "
                             "falls back to the newest complete checkpoint")
        return path
    root = os.path.join(path, "checkpoints")
    found = sorted((d for d in os.listdir(root) if _STEP_DIR.fullmatch(d)), key=step_of, reverse=True) \
        if os.path.isdir(root) else []
    named = None
    if os.path.exists(os.path.join(path, "latest")):
        with open(os.path.join(path, "latest")) as f:
            named = f.read().strip()
        if not _STEP_DIR.fullmatch(named):
            warnings.warn(f"{os.path.join(path, 'latest')}: names no checkpoint ({named[:40]!r}); trying "
                          "them all")
            named = None
    if not found and named is None:
        raise FileNotFoundError(f"--resume {path}: no checkpoint there (expected trainer_state.pt or a "
                                "'latest' file)")
    # after the one `latest` names, only older ones: newer ones belong to a continuation that was abandoned
    order = [named] + [d for d in found if step_of(d) < step_of(named)] if named else found
    damaged = []
    for name in order:
        problem = checkpoint_problem(os.path.join(root, name))
        if problem is None:
            if damaged:
                warnings.warn(f"--resume {path}: damaged checkpoint ({'; '.join(damaged)}); resuming from "
                              f"the previous complete one, {name}")
            return os.path.join(root, name)
        damaged.append(problem)
    raise FileNotFoundError(f"--resume {path}: no complete checkpoint ({'; '.join(damaged)})")


def load_checkpoint(path, rng, buffer, rank=0, world=1):
    """Restore RNG states and buffer from a checkpoint folder; returns (step, data position, optimizer
    state). Each rank gets back its own torch (and CUDA) generator state when the checkpoint was written by as
    many processes (each rank sampled its own share of the prompts); otherwise every rank starts from the main
    process's. The file is memory-mapped: every rank reads only what it restores (its optimizer shard)."""
    trainer_state = torch.load(os.path.join(path, "trainer_state.pt"), weights_only=False, mmap=True,
                               map_location="cpu")  # our own file
    torch_rng, cuda_rng = trainer_state["torch_rng"], trainer_state["cuda_rng"]
    ranks = trainer_state.get("rank_rngs")
    if ranks and len(ranks) == world:
        torch_rng, cuda_rng = ranks[rank]
    elif ranks and rank == 0:
        print(f"--resume: {path} was written by {len(ranks)} processes, this run has {world}: every rank "
              "continues from the main process's random state")
    torch.set_rng_state(torch_rng.clone())
    if cuda_rng is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.clone() for s in cuda_rng])
    rng.setstate(trainer_state["python_rng"])
    with open(os.path.join(path, "state.json")) as f:
        state = json.load(f)
    buffer.load_state_dict(state["buffer"])
    return state["step"], (state["data_epoch"], state["data_pos"]), trainer_state["optimizer"]


# what a resume may not change: the weights continue the checkpoint's student, and the data position and the
# buffer refer to the rows of its data, in its order
_SAME_RUN = ("student", "text_only", "freeze_vision", "data", "data_config", "data_limit", "dedup_ids",
             "seed")


def continue_config(cfg):
    """A resume continues the run as it was: every flag the command line does not give takes the value the
    checkpoint's run had (--steps, --out-dir and --overwrite excepted), so config.json and the checkpoints
    record what trains. A flag given with another value changes the run from here on: listed in a warning
    and recorded in OUT/resumes.jsonl with the step; one of _SAME_RUN stops the resume instead. Returns the
    changes, {name: [old, new]}."""
    ckpt = find_checkpoint(cfg.resume)
    with open(os.path.join(ckpt, "state.json")) as f:
        saved = json.load(f)["config"]
    given = getattr(cfg, "given", set(saved))
    changes = {}
    for name, value in config_record(cfg).items():
        if name not in saved or name in _RESUME_FLAGS or saved[name] == value:
            continue
        if name in given:
            changes[name] = [saved[name], value]
        elif name == "teacher_url" and saved[name] and "***" in saved[name]:  # its key was never written
            raise SystemExit(f"train.py: cannot resume: the run's --teacher-url carried a key, which is "
                             f"never written ({saved[name]}): give --teacher-url again")
        else:
            setattr(cfg, name, saved[name])
    fixed = [name for name in _SAME_RUN if name in changes]
    if fixed:
        raise SystemExit("train.py: cannot resume: " + "; ".join(
            f"--{name.replace('_', '-')} {changes[name][1]!r}: the run continues {ckpt}, trained with "
            f"{changes[name][0]!r}" for name in fixed) + " (the weights, the data position and the buffer "
            "belong to it); leave these flags out, or start a fresh run with them")
    if changes:
        warnings.warn(f"--resume: flags differ from the run that wrote {ckpt}: "
                      + ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changes.items()))
    cfg.resume_changes = changes  # not a field: open_run records them in resumes.jsonl
    return changes


def cut_back(path, start):
    """Keep the rows of a run file (metrics.jsonl, a dump) up to step `start`. A last line cut short by a
    crash is dropped (with a warning); a damaged line before it stops the run, naming the line."""
    with open(path) as f:
        lines = [(n, line) for n, line in enumerate(f, 1) if line.strip()]
    kept = []
    for i, (n, line) in enumerate(lines):
        try:
            row = json.loads(line)
        except ValueError:
            if i < len(lines) - 1:
                raise ValueError(f"{path}:{n}: not valid JSON; repair or delete this line") from None
            warnings.warn(f"{path}:{n}: dropping the half-written last line")
            continue
        if row["step"] <= start:
            kept.append(line if line.endswith("\n") else line + "\n")
    atomic_write(path, "".join(kept))


def open_run(cfg, start, accelerator, ckpt=None):
    """config.json, and every file of the run cut back to the resumed step; returns the metrics path. The
    checkpoint resumed from becomes the run's head (`latest`) first: a run branched from an older checkpoint
    that crashes before its first save resumes from that branch, never from the abandoned newer checkpoint."""
    log_path = os.path.join(cfg.out_dir, "metrics.jsonl")
    if accelerator.is_main_process:
        root = os.path.realpath(os.path.join(cfg.out_dir, "checkpoints"))
        if ckpt and os.path.dirname(os.path.realpath(ckpt)) == root:
            atomic_write(os.path.join(cfg.out_dir, "latest"), os.path.basename(os.path.normpath(ckpt)))
        atomic_write(os.path.join(cfg.out_dir, "config.json"), json.dumps(config_record(cfg), indent=2))
        if getattr(cfg, "resume_changes", None):  # when the run changed, and how
            with open(os.path.join(cfg.out_dir, "resumes.jsonl"), "a") as f:
                f.write(json.dumps({"step": start, "changes": cfg.resume_changes}) + "\n")
        # the steps after it are written again
        for name in ("metrics.jsonl", "rollouts.jsonl", "reformulated.jsonl"):
            if os.path.exists(os.path.join(cfg.out_dir, name)):
                cut_back(os.path.join(cfg.out_dir, name), start)
    if cfg.report_to != "none":
        accelerator.init_trackers("zppo", config=config_record(cfg))
    return log_path


def save(cfg, step, model, tokenizer, optimizer, buffer, data_pos, rng, accelerator):
    """The step's checkpoint, never of non-finite weights: those stop the run and the last checkpoint stays
    the one `latest` names. Every rank checks its own parameters (its shard under FSDP) and all agree."""
    bad = [name for name, p in model.named_parameters() if not torch.isfinite(local(p)).all()]
    if reduce_sum(accelerator, [len(bad)])[0]:
        raise SystemExit(f"step {step}: weights hold NaN or inf ({', '.join(bad[:3]) or 'on another rank'}"
                         f"{', ...' if len(bad) > 3 else ''}); no checkpoint written, {cfg.out_dir}/latest "
                         "still names the last good one")
    # collective under FSDP (the shards are gathered) and for the RNG states: every rank takes part, the main
    # one writes
    full, optim = model_state(model, accelerator), optimizer_state(model, optimizer)
    rngs = rank_rngs(accelerator)
    if accelerator.is_main_process:
        save_checkpoint(cfg, step, model, full, tokenizer, optim, buffer, tuple(data_pos), rng, accelerator,
                        rngs)
    accelerator.wait_for_everyone()


def resume_from(cfg, ckpt, model, optimizer, rng, buffer, accelerator):
    """Restore the checkpoint's state, and apply --lr and --weight-decay to the restored optimizer (loading it
    brings back the values it was saved with)."""
    start, data_pos, optim = load_checkpoint(ckpt, rng, buffer, accelerator.process_index,
                                             accelerator.num_processes)
    if buffer.capacity != cfg.buffer_capacity:  # applied, not only listed: the restored capacity would win
        print(f"--buffer-capacity {cfg.buffer_capacity} replaces the restored buffer's {buffer.capacity} "
              f"({max(0, len(buffer) - cfg.buffer_capacity)} of its {len(buffer)} questions evicted, oldest "
              "first)")
        buffer.capacity = cfg.buffer_capacity
        buffer.update([], cfg.tau)  # evicts down to the new capacity (FIFO), counted in the buffer's totals
    load_optimizer_state(model, optimizer, optim)
    for key in ("lr", "weight_decay"):
        restored = {group[key] for group in optimizer.param_groups}
        if restored != {getattr(cfg, key)}:
            print(f"--{key.replace('_', '-')} {getattr(cfg, key)} replaces the restored optimizer's "
                  f"{', '.join(map(str, sorted(restored)))}")
            for group in optimizer.param_groups:
                group[key] = getattr(cfg, key)
    print(f"resumed from {ckpt} at step {start}")
    return start, data_pos


# ---------------------------------------------------------------------------------------------------------
# a step's lines: metrics.jsonl and the optional dumps


def write_step(cfg, step, metrics, eps, helped, log_path, accelerator):
    """One line of metrics.jsonl and the optional dumps (rollouts.jsonl, reformulated.jsonl)."""
    if not accelerator.is_main_process:
        return
    if cfg.dump_rollouts:
        with open(os.path.join(cfg.out_dir, "rollouts.jsonl"), "a") as f:
            f.writelines(json.dumps({"step": step, "group": e.group, "kind": e.kind, "reward": e.reward,
                                     "adv": e.adv, "tokens": len(e.token_ids),
                                     "images": len(e.vision["image_grid_thw"]) if e.vision else 0}) + "\n"
                         for e in eps)
    if cfg.dump_reformulated:
        with open(os.path.join(cfg.out_dir, "reformulated.jsonl"), "a") as f:
            f.writelines(json.dumps({"step": step, "kind": g.kind, "id": g.question["id"], "prompt": g.text,
                                     "images": g.question.get("images", []), "answer": g.question["answer"],
                                     "rollouts": [{"text": r.text, "reward": x} for r, x in
                                                  zip(g.rollouts, g.rewards)]}) + "\n"
                         for g in helped)
    with open(log_path, "a") as f:
        f.write(json.dumps({"step": step, **metrics}) + "\n")
    accelerator.log({k: v for k, v in metrics.items() if v is not None}, step=step)


def add_to_step(step, metrics, log_path, accelerator):
    """Merge metrics (an evaluation that ran after the step's checkpoint) into the step's line, the last one
    of metrics.jsonl; the file is replaced atomically, so a crash leaves the line with or without them."""
    if not accelerator.is_main_process or not metrics:
        return
    with open(log_path) as f:
        lines = f.readlines()
    row = json.loads(lines[-1])
    if row["step"] != step:
        raise ValueError(f"{log_path}: the last line is step {row['step']}, not {step}")
    row.pop("eval/pending", None)  # the evaluation ended, well or not
    lines[-1] = json.dumps({**row, **metrics}) + "\n"
    atomic_write(log_path, "".join(lines))
    accelerator.log({k: v for k, v in metrics.items() if v is not None}, step=step)
