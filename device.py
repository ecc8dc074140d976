"""What the device holds and does: whether a run fits its GPU (checked at start, before anything loads), the
device's peak FLOP/s (GPUs from a table by name, a CPU measured by a short matmul probe), the model FLOPs of a
step's passes, and each phase's seconds and peak memory. train.py logs every step's throughput from these
(perf/*, mem/*: docs/training.md, "What each step logs").
"""
import ctypes
import functools
import gc
import importlib.util
import os
import threading
import time
from contextlib import contextmanager

import torch

from config import use_fsdp

GIB = 2 ** 30
# a step's metrics that measure the machine, not the run: they differ between two runs of the same steps
MEASURED = ("time/", "perf/", "mem/")

# ---------------------------------------------------------------------------------------------------------
# throughput and utilisation

# dense bf16 tensor-core peaks, FLOP/s, from NVIDIA's data sheets (no sparsity); the first name a GPU's own
# name contains wins, so the more specific names come first
GPU_PEAKS = [("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("H100", 989e12), ("H200", 989e12),
             ("H800", 989e12), ("GH200", 989e12), ("B200", 2250e12), ("B100", 1750e12), ("A100", 312e12),
             ("A800", 312e12), ("L40S", 362e12), ("L40", 181e12), ("L4", 121e12), ("A10", 125e12),
             ("RTX 4090", 165e12), ("RTX 3090", 71e12), ("V100", 125e12), ("T4", 65e12)]


def gpu_peak(name):
    """A GPU's dense bf16 peak from GPU_PEAKS by its name (torch.cuda.get_device_name), or None."""
    return next((peak for key, peak in GPU_PEAKS if key.lower() in name.lower()), None)


@functools.cache
def cpu_peak(dtype=torch.float32, threads=None, seconds=0.2, size=1024):
    """This CPU's matmul rate, FLOP/s, in `dtype` with torch's `threads`: square `size` matmuls for about
    `seconds`, the fastest of 5 windows (a peak: a window the OS or another process interrupted reads low,
    and a demo's probe once read 0.24 TFLOP/s where this machine multiplies at 0.42). A bf16 matmul runs ~40x
    slower than fp32 on a CPU without bf16 instructions: the probe sees it. Measured once per process and
    setting."""
    own = torch.Generator().manual_seed(0)  # torch's global random state is the run's: left untouched
    a, b = (torch.rand(size, size, generator=own).to(dtype) for _ in range(2))
    a @ b  # warm-up: the first call picks its kernels
    best = 0.0
    for _ in range(5):
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 5:
            a @ b
            count += 1
        best = max(best, 2 * size ** 3 * count / (time.perf_counter() - start))
    return best


def device_peak(device, dtype):
    """(peak FLOP/s of one process's device, where the number comes from), or (None, why there is none)."""
    if torch.device(device).type == "cuda":
        name = torch.cuda.get_device_name(device)
        peak = gpu_peak(name)
        return (peak, f"{name}, dense bf16, data sheet") if peak else \
            (None, f"{name}: not in device.GPU_PEAKS")
    threads, kind = torch.get_num_threads(), str(dtype).replace("torch.", "")
    return cpu_peak(dtype, threads), f"CPU, {kind} matmul probe, {threads} threads"


def flop_parameters(model):
    """The parameters a token's forward multiplies by (2 FLOPs each): all of them, less an input embedding
    that is not also the output head (a lookup, no multiply). Global sizes, also of FSDP2's shards."""
    total = sum(p.numel() for p in model.parameters())
    embed, head = model.get_input_embeddings(), model.get_output_embeddings()
    tied = head is not None and embed is not None and head.weight is embed.weight
    return total - (0 if tied or embed is None else embed.weight.numel())


def model_flops(parameters, forward_tokens, trained_tokens):
    """Model FLOPs of passes over a model of `parameters` (2 per parameter and token forward, 6 forward and
    backward: Kaplan et al.'s count; attention's own FLOPs and activation recomputation left out, as
    model-FLOPs utilisation counts them)."""
    return 2 * parameters * forward_tokens + 6 * parameters * trained_tokens


def resident_bytes():
    """This process's resident memory now (Linux: /proc/self/statm), or 0 where it cannot be read."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def release_memory():
    """Hand freed host memory back to the OS: glibc keeps freed tensors resident in its heap, so without
    this a CPU run's resident memory creeps up step by step (measured in the demo: the rollout phase from
    1.9 to 4.3 GiB over 10 steps at the same sizes). A no-op where the C library is not glibc."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to trim
        pass


class Meter:
    """Each phase's seconds (summed over the step) and peak memory: on a GPU the allocator's peak, on a CPU
    the resident memory, sampled every `interval` seconds by a thread (resident memory has no peak counter
    that can be reset per phase). Phases may nest (a judge's calls inside scoring): an inner phase's peak
    counts for the phases around it too."""

    def __init__(self, device, interval=0.02):
        self.cuda = torch.device(device).type == "cuda"
        self.seconds, self.peaks, self.open, self.interval, self._peak = {}, {}, [], interval, 0
        self._done = threading.Event()
        if not self.cuda:
            threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self):
        while not self._done.wait(self.interval):
            self._peak = max(self._peak, resident_bytes())

    def close(self):
        self._done.set()

    def _read(self):
        """The peak since the last reset, then reset: each open phase has had it."""
        peak = torch.cuda.max_memory_allocated() if self.cuda else max(self._peak, resident_bytes())
        for key in self.open:
            self.peaks[key] = max(self.peaks.get(key, 0), peak)
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        self._peak = resident_bytes()

    def step(self):
        """A new step: its phases start from nothing."""
        self.seconds, self.peaks = {}, {}

    @contextmanager
    def phase(self, key):
        self._read()  # the phases around this one keep what they reached before it
        self.open.append(key)
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[key] = self.seconds.get(key, 0.0) + time.perf_counter() - start
            self._read()
            self.open.remove(key)


def perf_metrics(meter, step_seconds, tokens, parameters, peak, world):
    """A step's throughput: time/PHASE (seconds), mem/PHASE_gib (the main process's peak), the rollout and
    update phases' tokens per second (`tokens`: the whole job's counts, all ranks), and perf/mfu, the model
    FLOPs of the student's passes over the step's time and every process's device peak (`peak` None: no
    utilisation)."""
    out = {f"time/{k}": v for k, v in meter.seconds.items()}
    out.update({f"mem/{k}_gib": v / GIB for k, v in meter.peaks.items()})
    out["time/step"] = step_seconds
    for phase, key in (("rollout", "rollout"), ("update", "update")):
        if meter.seconds.get(phase):
            out[f"perf/{phase}_tokens_per_s"] = tokens[key] / meter.seconds[phase]
    if peak:
        flops = model_flops(parameters, tokens["prefill"] + tokens["rollout"] + tokens["forward"],
                            tokens["update"])
        out["perf/mfu"] = flops / (step_seconds * peak * world)
        out["perf/update_mfu"] = model_flops(parameters, tokens["forward"], tokens["update"]) / (
            max(meter.seconds.get("update", 0.0), 1e-9) * peak * world)
    return out


# ---------------------------------------------------------------------------------------------------------
# will the run fit its GPU


def gpu_memory():
    """This process's GPU's memory in bytes, or None without one."""
    import torch

    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_properties(int(os.environ.get("LOCAL_RANK", "0"))).total_memory


def checkpoint_parameters(name):
    """(parameters, bytes per parameter) of a checkpoint from its safetensors headers: a local folder, or a
    hub id already in the local cache; None when neither is there (not downloaded yet, or a .gguf file)."""
    import json
    import struct

    folder = name if os.path.isdir(name) else None
    if folder is None and "/" in name and not name.endswith(".gguf"):
        try:
            from huggingface_hub import snapshot_download

            folder = snapshot_download(name, allow_patterns=["*.safetensors"], local_files_only=True)
        except Exception:  # noqa: BLE001 (not in the cache, or no hub library: unknown)
            return None
    files = [os.path.join(folder, f) for f in sorted(os.listdir(folder))
             if f.endswith(".safetensors")] if folder else []
    count, nbytes = 0, 0
    for path in files:
        with open(path, "rb") as f:
            header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
        for key, tensor in header.items():
            if key != "__metadata__":
                n = 1
                for d in tensor["shape"]:
                    n *= d
                count += n
                nbytes += tensor["data_offsets"][1] - tensor["data_offsets"][0]
    return (count, nbytes / count) if count else None


def memory_problems(cfg, gpu_bytes, world, student, teacher, fsdp):
    """What does not fit on one GPU, checked at start, before anything loads: a list of lines (empty when it
    fits), and the plan they come from. `student` and `teacher`: checkpoint_parameters' (parameters, bytes per
    parameter), or None when unknown (that part is then left out). The trainer holds fp32 weights and
    gradients and AdamW's two moments, 16 bytes per parameter (FSDP: its share of them), besides the
    activations of the update; a colocated vLLM engine takes its --*-gpu-memory-utilization share of the
    GPU; an in-process vLLM teacher must hold its weights in its share with room for KV cache, and is awake
    only during its calls (--teacher-sleep), but then beside the trainer and the student's engine; an
    in-process transformers teacher keeps bf16 weights on the GPU all the time."""
    plan, problems = {}, []
    engine = cfg.engine if cfg.engine != "auto" else \
        "vllm" if importlib.util.find_spec("vllm") else "transformers"  # on a GPU: train.py's choice
    if student:
        plan["trainer (fp32 weights, gradients, AdamW)"] = 16 * student[0] / (world if fsdp else 1)
    if engine == "vllm":
        plan["student's vLLM engine"] = cfg.vllm_gpu_memory_utilization * gpu_bytes
    in_process = cfg.teacher not in (None, "gold") and not cfg.teacher_url
    kind = cfg.teacher_engine if cfg.teacher_engine != "auto" else engine
    if in_process and teacher:
        weights = teacher[0] * min(teacher[1], 2)  # bf16, or the checkpoint's own (FP8: 1 byte)
        if kind == "vllm":
            share = cfg.teacher_gpu_memory_utilization * gpu_bytes
            plan["teacher's vLLM engine (awake during its calls)"] = share
            if weights > 0.9 * share:
                problems.append(f"the teacher's weights ({weights / GIB:.1f} GiB) do not fit its share of "
                                "the GPU (--teacher-gpu-memory-utilization "
                                f"{cfg.teacher_gpu_memory_utilization}: {share / GIB:.1f} GiB) with room for "
                                "its KV cache")
        else:
            plan["teacher (transformers, bf16 weights)"] = weights
    used = sum(plan.values())
    if used > 0.95 * gpu_bytes:
        problems.append(f"the run needs {used / GIB:.1f} GiB of the GPU's {gpu_bytes / GIB:.1f} GiB before "
                        "any activation (" + ", ".join(f"{k} {v / GIB:.1f}" for k, v in plan.items()) + ")")
    return problems, plan


def memory_check(cfg):
    """On a GPU, stop at start when the run cannot fit it (memory_problems), naming what to change."""
    gpu = gpu_memory()
    if gpu is None:
        return
    in_process = cfg.teacher not in (None, "gold") and not cfg.teacher_url
    student = checkpoint_parameters(cfg.resume or cfg.student)
    teacher = checkpoint_parameters(cfg.teacher) if in_process else None
    world = int(os.environ.get("WORLD_SIZE", "1"))
    found, _ = memory_problems(cfg, gpu, world, student, teacher, use_fsdp(cfg))
    if found:
        raise SystemExit("train.py: cannot start:\n  " + "\n  ".join(
            f"GPU memory: {p}; docs/gpus.md lists the layouts that fit each student and teacher (the teacher "
            "on GPUs of its own with --teacher-url, --fsdp over more GPUs, lower shares)" for p in found))
