"""Random-weight Qwen3.5 models and a small local tokenizer, built offline for from_pretrained: the tests'
tiny models (conftest.py's fixtures), scripts/compare.py's --smoke student and scripts/bench_gpu.py's
models."""

SHAPE_TINY = dict(vocab_size=400, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  layer_types=["linear_attention", "full_attention"], num_attention_heads=2,
                  num_key_value_heads=1, head_dim=32, linear_num_key_heads=2, linear_num_value_heads=2,
                  linear_key_head_dim=16, linear_value_head_dim=16)
# Qwen's chat format; a message's content is a text, or a list of image and text parts (vision-language)
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}{{ m['content'] }}"
    "{% else %}{% for c in m['content'] %}{% if c['type'] == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
VISION_TINY = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                   num_position_embeddings=64, patch_size=16, spatial_merge_size=2, temporal_patch_size=2)


def build_tokenizer(shape, vision=False):
    """A byte-level BPE tokenizer trained on the prompt strings, with Qwen's chat template and special tokens
    (the vision ones with `vision`); at most 400 tokens and within the model's vocabulary."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from reformulate import BCQ_INSTRUCTION, CLOSER, NCQ_INSTRUCTION

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    if vision:
        specials += ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [CLOSER, BCQ_INSTRUCTION, NCQ_INSTRUCTION,
              "What is 3 + 4? The answer is \\boxed{7}. <think> </think>",
              "<candidate> </candidate> user assistant 0123456789 + - * / = ( ) { }"] * 5
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=min(400, shape["vocab_size"]),
                                                        special_tokens=specials,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   chat_template=CHAT_TEMPLATE)


def build_random_model(path, shape, seed=0, vision=None, pixels=(32 * 32, 64 * 64)):
    """build_tokenizer's tokenizer and a random-weight Qwen3.5 of `shape` (layer_types repeated to the layer
    count), both saved to `path` for from_pretrained. With `vision` (a vision-tower config) it is the
    vision-language class, with its image processor (`pixels`: the processor's min and max pixels) and the
    vision special tokens."""
    import torch
    from transformers import (
        Qwen3_5Config,
        Qwen3_5ForCausalLM,
        Qwen3_5ForConditionalGeneration,
        Qwen3_5TextConfig,
    )

    tokenizer = build_tokenizer(shape, vision=bool(vision))
    layers = shape["num_hidden_layers"]
    config = Qwen3_5TextConfig(**{**shape, "layer_types": (shape["layer_types"] * layers)[:layers]},
                               max_position_embeddings=32_768, tie_word_embeddings=True,
                               eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                               bos_token_id=None)
    torch.manual_seed(seed)
    if vision:
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        ids = {t: tokenizer.convert_tokens_to_ids(t) for t in
               ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")}
        config = Qwen3_5Config(text_config=config.to_dict(), vision_config=vision, tie_word_embeddings=True,
                               image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                               vision_start_token_id=ids["<|vision_start|>"],
                               vision_end_token_id=ids["<|vision_end|>"])
        model = Qwen3_5ForConditionalGeneration(config)
        Qwen2VLImageProcessorPil(min_pixels=pixels[0], max_pixels=pixels[1], patch_size=vision["patch_size"],
                                 merge_size=vision["spatial_merge_size"],
                                 temporal_patch_size=vision["temporal_patch_size"]).save_pretrained(path)
    else:
        model = Qwen3_5ForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def build_tiny_model(path, seed=0):
    """Byte-level BPE tokenizer trained on a few sentences, and a 2-layer Qwen3.5 (one linear-attention
    and one full-attention layer, as in the real hybrid) of a few hundred thousand parameters."""
    return build_random_model(path, SHAPE_TINY, seed)


def build_tiny_dense(path, seed=0):
    """The same tokenizer with a 2-layer dense Qwen3 (Qwen3ForCausalLM, head size 32: one vLLM's CPU attention
    takes) of ~100k parameters: the model the real-vLLM tests use, since vLLM's CPU build cannot load
    Qwen3.5."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    tokenizer = build_tokenizer(SHAPE_TINY)
    config = Qwen3Config(vocab_size=400, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=32,
                         max_position_embeddings=4096, tie_word_embeddings=True,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=None)
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
