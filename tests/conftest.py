"""Shared fixtures: a tiny random-weight Qwen3.5 with a locally built tokenizer, saved to disk, so the
tests exercise the real from_pretrained loading code without any download."""
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def build_tiny_model(path, seed=0):
    """Byte-level BPE tokenizer trained on a few sentences, and a 2-layer Qwen3.5 (one linear-attention
    and one full-attention layer, as in the real hybrid) of a few hundred thousand parameters."""
    from bench_gpu import SHAPE_TINY, build_random_model

    return build_random_model(path, SHAPE_TINY, seed)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    return build_tiny_model(str(tmp_path_factory.mktemp("tiny_qwen35")))
