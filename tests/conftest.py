"""Shared fixtures: a tiny random-weight Qwen3.5 with a locally built tokenizer, saved to disk, so the
tests exercise the real from_pretrained loading code without any download."""
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def build_tiny_model(path, seed=0):
    """Byte-level BPE tokenizer trained on a few sentences, and a 2-layer Qwen3.5 (one linear-attention
    and one full-attention layer, as in the real hybrid) of a few hundred thousand parameters."""
    from bench_gpu import SHAPE_TINY, build_random_model

    return build_random_model(path, SHAPE_TINY, seed)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    return build_tiny_model(str(tmp_path_factory.mktemp("tiny_qwen35")))


@pytest.fixture(scope="session")
def tiny_vlm(tmp_path_factory):
    """The same tokenizer and text shape as tiny_model, as Qwen3.5's vision-language class with a 2-block
    vision tower and its image processor (images resized to 32x32 .. 64x64 pixels: 1 to 4 image tokens)."""
    from bench_gpu import SHAPE_TINY, VISION_TINY, build_random_model

    return build_random_model(str(tmp_path_factory.mktemp("tiny_vlm")), SHAPE_TINY, vision=VISION_TINY)


@pytest.fixture(scope="session")
def images(tmp_path_factory):
    """A few small PNG files: plain colours and sizes, made here."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("images")
    paths = []
    for i, (size, colour) in enumerate([((40, 30), (200, 20, 20)), ((64, 64), (20, 200, 20)), ((30, 90), (0, 0, 250))]):
        paths.append(str(folder / f"img{i}.png"))
        Image.new("RGB", size, colour).save(paths[-1])
    return paths


@pytest.fixture
def fake(monkeypatch):
    """A stand-in `vllm` module (tests/fake_vllm.py) injected at the import boundary, fresh for each test."""
    import fake_vllm

    monkeypatch.setitem(sys.modules, "vllm", fake_vllm)
    monkeypatch.setattr(fake_vllm.LLM, "instances", [])
    monkeypatch.setattr(fake_vllm.LLM, "ignore_weights", False)
    return fake_vllm
