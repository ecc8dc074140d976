"""The run folder: config.json, metrics.jsonl, the optional dumps, and checkpoints that hold everything
a run needs to continue exactly, written so that a crash never leaves half of one.

A checkpoint is a folder OUT/checkpoints/step_NNNNNN with the model and tokenizer (save_pretrained,
safetensors), trainer_state.pt (optimizer, torch and Python RNG states) and state.json (step, data
position, replay buffer, config). It is written under a temporary name and renamed when complete;
OUT/latest names the newest one.
"""
import json
import os
import shutil
from dataclasses import asdict

import torch
from accelerate import DistributedType


def save_checkpoint(cfg, step, model, state_dict, tokenizer, optim_state, buffer, data_pos, rng, accelerator):
    root = os.path.join(cfg.out_dir, "checkpoints")
    final, tmp = os.path.join(root, f"step_{step:06d}"), os.path.join(root, f"step_{step:06d}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    accelerator.unwrap_model(model).save_pretrained(tmp, state_dict=state_dict, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    if getattr(tokenizer, "image_processor", None) is not None:  # a vision-language model's, beside it
        tokenizer.image_processor.save_pretrained(tmp)
    torch.save({"optimizer": optim_state, "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                "python_rng": rng.getstate()}, os.path.join(tmp, "trainer_state.pt"))
    with open(os.path.join(tmp, "state.json"), "w") as f:
        json.dump({"step": step, "data_epoch": data_pos[0], "data_pos": data_pos[1], "buffer": buffer.state_dict(),
                   "config": asdict(cfg)}, f)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    atomic_write(os.path.join(cfg.out_dir, "latest"), os.path.basename(final))
    kept = sorted(d for d in os.listdir(root) if d.startswith("step_") and not d.endswith(".tmp"))
    for old in kept[:-cfg.keep_checkpoints] if cfg.keep_checkpoints > 0 else []:
        shutil.rmtree(os.path.join(root, old), ignore_errors=True)
    return final


def atomic_write(path, text):
    with open(path + ".tmp", "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(path + ".tmp", path)


def find_checkpoint(path):
    """A run directory (its latest checkpoint) or a checkpoint directory."""
    if os.path.exists(os.path.join(path, "latest")):
        with open(os.path.join(path, "latest")) as f:
            path = os.path.join(path, "checkpoints", f.read().strip())
    if not os.path.exists(os.path.join(path, "trainer_state.pt")):
        raise FileNotFoundError(f"--resume {path}: no checkpoint there (expected trainer_state.pt or a 'latest' "
                                "file)")
    return path


def load_checkpoint(path, rng, buffer):
    """Restore RNG states and buffer from a checkpoint folder; returns (step, data position, optimizer state)."""
    trainer_state = torch.load(os.path.join(path, "trainer_state.pt"), weights_only=False)  # our own file
    torch.set_rng_state(trainer_state["torch_rng"])
    if trainer_state["cuda_rng"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(trainer_state["cuda_rng"])
    rng.setstate(trainer_state["python_rng"])
    with open(os.path.join(path, "state.json")) as f:
        state = json.load(f)
    buffer.load_state_dict(state["buffer"])
    return state["step"], (state["data_epoch"], state["data_pos"]), trainer_state["optimizer"]


def _fsdp_state_dict_type(model, accelerator):
    """FSDP's state-dict settings from the accelerate config (full state on the main process, by default)."""
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    plugin = accelerator.state.fsdp_plugin
    return FSDP, FSDP.state_dict_type(model, plugin.state_dict_type, plugin.state_dict_config,
                                      plugin.optim_state_dict_config)


def optimizer_state(model, optimizer, accelerator):
    """The optimizer's whole state. Under FSDP each rank holds a shard: gathered (a collective; every rank
    calls it) into the full state on the main process, as accelerate's own FSDP checkpointing does."""
    if accelerator.distributed_type != DistributedType.FSDP:
        return optimizer.state_dict()
    FSDP, settings = _fsdp_state_dict_type(model, accelerator)
    with settings:
        return FSDP.optim_state_dict(model, optimizer)


def load_optimizer_state(model, optimizer, state, accelerator):
    """The inverse of optimizer_state: under FSDP the full state is sharded back over the ranks."""
    if accelerator.distributed_type != DistributedType.FSDP:
        optimizer.load_state_dict(state)
        return
    FSDP, settings = _fsdp_state_dict_type(model, accelerator)
    rank0_only = accelerator.state.fsdp_plugin.optim_state_dict_config.rank0_only
    with settings:
        optimizer.load_state_dict(FSDP.optim_state_dict_to_load(
            model, optimizer, state if accelerator.is_main_process or not rank0_only else None))


def open_run(cfg, start, accelerator):
    """config.json, and metrics.jsonl cut back to the resumed step; returns the metrics path."""
    log_path = os.path.join(cfg.out_dir, "metrics.jsonl")
    if accelerator.is_main_process:
        with open(os.path.join(cfg.out_dir, "config.json"), "w") as f:
            json.dump(asdict(cfg), f, indent=2)
        if os.path.exists(log_path):  # a resumed run rewrites the steps after its checkpoint
            with open(log_path) as f:
                kept = [line for line in f if line.strip() and json.loads(line)["step"] <= start]
            atomic_write(log_path, "".join(kept))
    if cfg.report_to != "none":
        accelerator.init_trackers("zppo", config=asdict(cfg))
    return log_path


def write_step(cfg, step, metrics, seqs, chosen, questions, prompts, reform, log_path, accelerator):
    """One line of metrics.jsonl and the optional dumps, written by the main process only."""
    if not accelerator.is_main_process:
        return
    if cfg.dump_rollouts:
        with open(os.path.join(cfg.out_dir, "rollouts.jsonl"), "a") as f:
            f.writelines(json.dumps({"step": step, "group": s.group, "kind": s.kind, "reward": s.reward,
                                     "adv": s.adv, "tokens": len(s.token_ids),
                                     "images": len(s.vision["image_grid_thw"]) if s.vision else 0}) + "\n"
                         for s in seqs)
    if cfg.dump_reformulated:
        reform_rewards = iter(s.reward for s in seqs if s.kind != "plain")
        with open(os.path.join(cfg.out_dir, "reformulated.jsonl"), "a") as f:
            for (i, kind), prompt, group in zip(chosen, prompts, reform):
                rollouts = [{"text": r.text, "reward": next(reform_rewards)} for r in group]
                f.write(json.dumps({"step": step, "kind": kind, "id": questions[i]["id"], "prompt": prompt,
                                    "images": questions[i].get("images", []), "answer": questions[i]["answer"],
                                    "rollouts": rollouts}) + "\n")
    with open(log_path, "a") as f:
        f.write(json.dumps({"step": step, **metrics}) + "\n")
    accelerator.log({k: v for k, v in metrics.items() if v is not None}, step=step)
