"""Rollouts: prompts in, sampled responses with their token ids and log-probs out, and the vLLM engine that
samples them during training (each training process holds its own, colocated on its GPU).

Every engine has the same small surface, so train.py never knows which one it drives:
    engine.generate(prompts, n, max_new_tokens, temperature, top_p, top_k, presence_penalty,
                    response_prefixes=None, thinking=None)
        -> per prompt, a list of n Rollouts (empty when the prompt does not fit the engine's context, or a
           remote request failed for good)
    engine.sync_weights(model)   # after an optimizer phase: make the engine sample from `model`
Prompts are user-message texts (or lists of {role, content} messages, a multi-turn chat, or texts with
images); the engine applies the model's chat template. `response_prefixes` (token ids per prompt, the Prefix
baseline's) start the assistant turn: they are appended after the templated prompt, so they are part of each
Rollout's prompt_ids (never of its token_ids) and the text is the whole turn, prefix included. The engines:
`VLLMEngine` here, the transformers engine (CPU, tests, small GPU runs) in models.py, the client of a teacher
or judge server in server.py; `ShardedEngine` spreads any of them over the training processes. Every vLLM call
of the project is in this file. Every sampling field is set explicitly in every engine: a checkpoint's own
generation_config.json (Qwen's ship top-k, top-p, temperature, sometimes min-p or a repetition penalty) never
reaches the sampler; min-p and the repetition penalty are always off.
"""
import importlib.util
import os
import socket
import warnings
from dataclasses import dataclass, field

import torch
from transformers import AutoConfig

from config import vllm_missing
from engines.video import prompt_videos
from logprobs import suppressed_token_ids, unwrap


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
    """An image of a prompt, decoded. data.py checked every training image at load: one that fails here was
    changed or removed since, and the error says so, with its path."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except Exception as e:  # noqa: BLE001 (PIL raises OSError, SyntaxError, ValueError... for a bad file)
        raise ValueError(f"image unreadable: {path} ({type(e).__name__}: {e}); it was readable when the data "
                         "loaded: was it changed or removed since?") from None


def encode_prompt(tokenizer, prompt, thinking=None):
    """(prompt token ids, image inputs or None). The chat template puts one placeholder per image; as
    Qwen's processor does, each becomes as many placeholders as the image has merged patches, and the
    image processor (attached to the tokenizer by load_model) gives the pixel values. A prompt's videos
    (video.py: sampled frames) come first, as Qwen's video inputs."""
    text, images = prompt_parts(prompt)
    videos = prompt_videos(prompt)
    ids = chat_prompt_ids(tokenizer, text, images, videos=len(videos), thinking=thinking)
    if not images and not videos:
        return ids, None
    vision = image_inputs(tokenizer, images) if images else {}
    if videos:  # evaluation's video benchmarks only: their frames become the model's video inputs
        from engines.video import expand_video_tokens, video_inputs

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


def chat_prompt_ids(tokenizer, text, images=(), videos=0, thinking=None):
    """The chat-templated prompt: a user-message text (with images: their placeholders first, then the
    text; `videos` video placeholders before those), or a list of {role, content} messages (a multi-turn
    chat) as it is. `thinking` False / True: the template's `enable_thinking` switch (Qwen3 and Qwen3.5
    think unless it is false; a template without the switch ignores it); None: the template's default."""
    if isinstance(text, list):
        messages = text
    else:
        visual = [{"type": "video"} for _ in range(videos)] + [{"type": "image"} for _ in images]
        content = text if not visual else visual + [{"type": "text", "text": text}]
        messages = [{"role": "user", "content": content}]
    switch = {} if thinking is None else {"enable_thinking": thinking}
    return list(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                              return_dict=False, **switch))


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


def png_data_url(path):
    import base64
    import io

    buffer = io.BytesIO()
    open_image(path).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


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


def vllm_dtype(choice, device, mixed_precision="no"):
    """vLLM's precision: auto = bf16 on GPU; on CPU the trainer's (bf16 under --mixed-precision bf16, else
    fp32), so the sync check compares like with like. A fp32 engine beside a bf16 trainer sampled the CPU
    demo's rollouts at 141 tokens/s, below the transformers engine's 156-185 (measured, 2 cores)."""
    if choice != "auto":
        return choice
    return "bfloat16" if torch.device(device).type == "cuda" or mixed_precision == "bf16" else "float32"


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
    same names in the same order, so the gathers match. Elsewhere the module's own tensors, cast one at a
    time (the copy vLLM's loader would make, with a warning per tensor)."""
    from torch.distributed.tensor import DTensor

    for name, tensor in unwrap(model).state_dict().items():
        tensor = tensor.to(dtype or tensor.dtype)
        yield name, tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


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
                           # on a CPU without torch.compile: SmolLM2-135M started in 7 s instead of 74 s and
                           # sampled 344 instead of 437 tokens/s (measured, 2 cores): a run's steps rarely
                           # repay the compile; on a GPU the compiled graphs pay
                           enforce_eager=not torch.cuda.is_available(),
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

    def close(self):
        """Shut the engine down now (train.close_engines, before the process group goes); vLLM's exit
        handler then has nothing left to do."""
        self.llm.llm_engine.engine_core.shutdown()

    def generate(self, prompts, n=1, max_new_tokens=256, temperature=1.0, top_p=1.0, top_k=0,
                 presence_penalty=0.0, response_prefixes=None, thinking=None):
        params = vllm_sampling_params(n, max_new_tokens, temperature, top_p, top_k, presence_penalty,
                                      self.suppress)
        requests, visions, expected, fits = [], [], [], []
        for p, pre in zip(prompts, response_prefixes or [[] for _ in prompts]):
            text, images = prompt_parts(p)
            videos = prompt_videos(p)
            ids = chat_prompt_ids(self.tokenizer, text, images, len(videos), thinking) + list(pre)
            request = {"prompt_token_ids": ids}
            vision = None
            if images or videos:  # one placeholder per image or video in `ids`: vLLM expands them itself
                data = {"image": [open_image(x) for x in images]} if images else {}
                if videos:  # evaluation only: the sampled frames with their metadata, not re-sampled by vLLM
                    from engines.video import vllm_video

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
