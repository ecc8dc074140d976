"""The transformers engine: a model in this process sampled with `model.generate` behind the engine interface
(rollout.py's docstring). The CPU's engine, the tests', small GPU runs', and the in-process teacher's when it
is not vLLM; the student's engine shares the trainer's module, so its weights are always the current ones.
"""
import contextlib
import inspect

import torch
from tqdm import tqdm
from transformers import DynamicCache, GenerationConfig
from transformers.cache_utils import DynamicLayer
from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from logprobs import batch_vision, mm_token_types, suppressed_token_ids
from rollout import Rollout, encode_prompt, exceeds_context, with_prefix_text


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


class Draw:
    """The last logits processor of a sampled generate: draws each row's token from softmax(scores) by
    inverting its cumulative distribution (one uniform number per row, in fp64) and leaves only that token
    possible, so generate's greedy pick takes it. transformers samples with torch.multinomial, which on a CPU
    draws an exponential number for every word of every row: 81 ms a step for 80 rows of 49,152 words against
    9 ms here (measured on 2 cores; it was a quarter of the CPU demo's rollout time)."""

    def __call__(self, ids, scores):
        cdf = torch.softmax(scores.double(), dim=-1).cumsum_(-1)  # (rows, vocab); -inf words add nothing
        u = torch.rand(len(cdf), 1, dtype=cdf.dtype, device=cdf.device) * cdf[:, -1:]
        # the first word whose cumulative mass passes u: a word of zero mass never is
        token = torch.searchsorted(cdf, u, right=True).clamp_(max=cdf.shape[-1] - 1)
        return torch.full_like(scores, float("-inf")).scatter_(-1, token, 0.0)


def sampler(temperature, top_p, top_k):
    """The processors that turn raw logits into the sampling distribution and draw from it: transformers' own
    temperature, top-k and top-p warpers, then Draw (generate itself then runs greedy)."""
    return [TemperatureLogitsWarper(temperature), *([TopKLogitsWarper(top_k)] if top_k else []),
            *([TopPLogitsWarper(top_p)] if top_p < 1 else []), Draw()]


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
                 presence_penalty=0.0, response_prefixes=None, thinking=None):
        prefixes = response_prefixes or [[] for _ in prompts]
        encoded = [(ids + list(pre), vision) for (ids, vision), pre in
                   zip((encode_prompt(self.tokenizer, p, thinking) for p in prompts), prefixes)]
        fits = [not exceeds_context(len(ids), max_new_tokens, self.max_model_len) for ids, _ in encoded]
        self.too_long += len(fits) - sum(fits)
        # one row per rollout, a prompt's n rows in one chunk (their prefill is shared); chunks of about
        # max_batch_size rows bound the padded batch in memory
        kept = [i for i in range(len(prompts)) if fits[i]]
        per_chunk = max(1, self.max_batch_size // n)
        sampling = dict(temperature=temperature, top_p=top_p, top_k=top_k, presence_penalty=presence_penalty)
        results = []
        with self.context():  # entered even with nothing to generate: under FSDP every rank gathers together
            for start in tqdm(range(0, len(kept), per_chunk), desc="generate", leave=False,
                              disable=len(kept) <= per_chunk):
                chunk = kept[start:start + per_chunk]
                results += self._generate_rows([encoded[i][0] for i in chunk], n, max_new_tokens, **sampling,
                                               vision=[encoded[i][1] for i in chunk])
        done = iter(results)
        groups = [[next(done) for _ in range(n)] if ok else [] for ok in fits]
        return with_prefix_text(groups, response_prefixes, self.tokenizer)

    def _shared_prefill(self, input_ids, attention, n):
        """{"cache": the prompts' cache but for their last token}, computed once per prompt and repeated for
        its n rows: the same numbers n prefills would give (up to rounding: other batch shapes), 1/n of the
        work (a quarter to a third of the demo's rollout time, measured). {} for a vision-language model
        (its rotary positions come from its own rules) and where the model's cache has layers other than
        plain attention (Qwen3.5's linear attention keeps states this cannot repeat)."""
        model = self.model
        if n == 1 or input_ids.shape[1] < 2 or getattr(model.config, "vision_config", None) is not None:
            return {}
        cache = DynamicCache(config=model.config)
        if any(type(layer) is not DynamicLayer for layer in cache.layers):
            return {}
        name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        positions = (attention.cumsum(-1) - 1).clamp(min=0)  # what generate gives left-padded rows
        model(input_ids=input_ids[:, :-1], attention_mask=attention[:, :-1], position_ids=positions[:, :-1],
              use_cache=True, **{name: cache})
        cache.batch_repeat_interleave(n)
        return {name: cache}

    def _generate_rows(self, prompt_ids, n, max_new_tokens, temperature, top_p, top_k, presence_penalty,
                       vision=None):
        """One padded batch of prompts (left-padded), n Rollouts each (a prompt's n rows together)."""
        model, pad = self.model, self.tokenizer.pad_token_id
        device = next(model.parameters()).device
        width = max(len(p) for p in prompt_ids)
        input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompt_ids], device=device)
        attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompt_ids], device=device)
        vision = vision or [None] * len(prompt_ids)
        rows = [r for r in range(len(prompt_ids)) for _ in range(n)]  # a prompt's n rollouts side by side
        images = {k: v.to(device) for k, v in batch_vision([vision[r] for r in rows]).items()}
        if images:  # the model places multimodal rotary positions from the image (1) and video (2) tokens
            images["mm_token_type_ids"] = mm_token_types(input_ids[rows], model.config)
        # greedy for generate: a sampled call draws its tokens in its own processors (sampler)
        config = GenerationConfig(do_sample=False, max_new_tokens=max_new_tokens, pad_token_id=pad,
                                  eos_token_id=sorted(self.eos_ids), return_dict_in_generate=True)
        record = SampledLogprobs(temperature, suppressed_token_ids(model.config))
        processors = [record] + (sampler(temperature, top_p, top_k) if temperature > 0 else [])
        if presence_penalty:
            vocab = model.config.get_text_config().vocab_size
            processors.insert(0, PresencePenalty(presence_penalty, width, len(rows), vocab, device))
        # generate() fills every field left None from model.generation_config (the checkpoint's file):
        # a blank one stands in for the call, so only the arguments above decide the sampling
        was_training, own_config = model.training, model.generation_config
        model.eval()
        model.generation_config = GenerationConfig()
        try:
            prefill = {} if images else self._shared_prefill(input_ids, attention, n)
            # synced_gpus off: transformers turns it on for an FSDP model on several ranks, to keep their
            # gathers in step; the engine's context has gathered every unit already, so each rank generates
            # its own share to its own length
            out = model.generate(input_ids=input_ids[rows], attention_mask=attention[rows], **images,
                                 **prefill, generation_config=config, synced_gpus=False,
                                 logits_processor=processors)
        finally:
            model.generation_config = own_config
            model.train(was_training)
        new = out.sequences[:, width:]
        logprobs = record.result(new)
        rollouts = []
        for row, r in enumerate(rows):
            tokens = new[row].tolist()
            stop = next((k for k, t in enumerate(tokens) if t in self.eos_ids), None)
            length = len(tokens) if stop is None else stop + 1
            rollouts.append(Rollout(
                text=self.tokenizer.decode(tokens[:length], skip_special_tokens=True),
                prompt_ids=prompt_ids[r], token_ids=tokens[:length], logprobs=logprobs[row, :length].tolist(),
                finish_reason="length" if stop is None else "stop", vision=vision[r]))
        return rollouts
