"""demo.py's pieces that run without the 135M model: the closing mechanism lines and the precision choice."""
import os

import torch

import demo


def test_mechanism_lines_sum_the_steps_and_weight_bcq_accuracy_by_groups():
    rows = [
        {"count/questions": 8, "count/plain_zero": 5, "count/zero_reformulated": 3, "count/zero_solved": 1,
         "count/bcq_zero": 2, "acc/bcq_zero": 0.5},
        {"count/questions": 10, "count/plain_zero": 3, "count/zero_reformulated": 1, "count/zero_solved": 1,
         "count/bcq_zero": 1, "acc/bcq_zero": 0.125, "buffer/admitted_total_at_0/8": 8,
         "buffer/graduated_total_from_0/8": 2},
    ]
    lines = demo.mechanism_lines(rows, "zppo", 8)
    assert lines[0].endswith("8 of 18")
    assert "BCQ/NCQ: 4, 2 with a correct rollout" in lines[1]
    assert lines[1].endswith(f"{(0.5 * 2 + 0.125) / 3:.3f}")  # 0.375: weighted by BCQ groups, not by steps
    assert lines[2].startswith("buffer: 2 of the 8 questions admitted at 0/8 graduated (25%")
    grpo = demo.mechanism_lines([{**rows[0], "count/zero_reformulated": 0, "count/bcq_zero": 0}], "grpo", 8)
    assert len(grpo) == 1 and grpo[0].endswith("5 of 8")  # no reformulation line, no buffer line
    # --group-size 4
    assert demo.mechanism_lines(rows, "grpo", 4)[0].startswith("all-wrong plain groups (0/4,")


def test_precision_follows_the_cpu_flags(monkeypatch, tmp_path):
    import builtins

    real_open = builtins.open

    def fake(flags):
        cpuinfo = tmp_path / "cpuinfo"
        cpuinfo.write_text(f"processor\t: 0\nflags\t\t: fpu sse2 {flags}\n")
        monkeypatch.setattr(builtins, "open",
                            lambda p, *a, **k: real_open(cpuinfo if p == "/proc/cpuinfo" else p, *a, **k))

    fake("avx2 fma")
    assert not demo.cpu_has_fast_bf16() and demo.precision_flags(False) == ["--mixed-precision", "no"]
    fake("avx2 avx512f avx512_bf16")
    assert demo.cpu_has_fast_bf16()
    fake("avx2 amx_bf16 amx_tile")
    assert demo.cpu_has_fast_bf16() and demo.precision_flags(True) == ["--mixed-precision", "bf16"]


def test_smollm2_is_converted_once_into_the_cache(tiny_model, tmp_path, monkeypatch):
    from models import load_model

    gguf = tmp_path / "SmolLM2.gguf"
    gguf.write_bytes(b"x" * 123)
    loads = []

    def fake_load(path, **kwargs):  # stands in for the GGUF de-quantisation
        loads.append(path)
        return load_model(tiny_model)

    monkeypatch.setattr(demo, "smollm2_gguf", lambda: str(gguf))
    monkeypatch.setattr(demo, "load_model", fake_load)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path = demo.smollm2()
    assert path == str(tmp_path / "cache" / "zppo" / "SmolLM2-135M-Instruct-123") and loads == [str(gguf)]
    assert demo.smollm2() == path and loads == [str(gguf)]  # the second call finds the converted copy
    monkeypatch.setattr(demo, "load_model", load_model)
    model, _ = demo.load_model(path)
    reference, _ = load_model(tiny_model)
    assert all(torch.equal(a, b)
               for a, b in zip(model.state_dict().values(), reference.state_dict().values()))
    assert not [p for p in os.listdir(tmp_path / "cache" / "zppo") if ".tmp" in p]


def test_primer_runs_under_gradient_checkpointing_and_turns_it_off(tiny_model, monkeypatch):
    import models
    from models import load_model

    model, tokenizer = load_model(tiny_model)
    seen = []
    name = ("is_activation_checkpointing" if hasattr(model, "is_activation_checkpointing")
            else "is_gradient_checkpointing")
    on = lambda: getattr(model, name)
    real_forward = model.forward

    def forward(*args, **kwargs):
        seen.append(on())
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", forward)
    examples = [{"question": f"What is {i} + 1?", "solution": f"\\boxed{{{i + 1}}}"} for i in range(3)]
    loss = demo.format_primer(model, tokenizer, examples, batch_size=2, bf16=False)
    assert seen == [True, True] and loss > 0  # two batches, both checkpointed
    assert not on() and not model.training
    models.checkpointing(model, True)
    assert on()


def test_large_frees_go_back_to_the_os():
    import platform

    import psutil  # an accelerate dependency
    demo.return_large_frees()
    rss = lambda: psutil.Process().memory_info().rss
    before = rss()
    blocks = [torch.ones(4 << 20) for _ in range(16)]  # 16 x 16 MiB
    assert rss() - before > 200 << 20
    del blocks
    if platform.libc_ver()[0] == "glibc":  # elsewhere the call is a no-op and the allocator decides
        assert rss() - before < 32 << 20


def test_huge_pages_are_asked_for_only_when_the_demo_runs_as_a_script():
    """compare.py imports demo: its runs (measured without it) keep torch's default allocation; the demo
    itself sets THP_MEM_ALLOC_ENABLE before torch is imported, and keeps a value the user set."""
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    probe = """
import os, runpy, sys
seen = []  # the variable's value when torch is first imported: torch reads it then

class Watch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" and not seen:
            seen.append(os.environ.get("THP_MEM_ALLOC_ENABLE"))

sys.meta_path.insert(0, Watch())
if sys.argv[1] == "import":
    import demo
else:  # as a script, stopped by --help before any work
    sys.argv = ["demo.py", "--help"]
    try:
        runpy.run_path("demo.py", run_name="__main__")
    except SystemExit:
        pass
print("THP", *seen)
"""

    def run(how, **extra):
        env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
        out = subprocess.run([sys.executable, "-c", probe, how], cwd=root, env={**env, **extra},
                             capture_output=True, text=True, timeout=120, check=False)
        assert out.returncode == 0, out.stderr
        return out.stdout.splitlines()[-1]

    assert run("import") == "THP None"
    assert run("script") == "THP 1"
    assert run("script", THP_MEM_ALLOC_ENABLE="0") == "THP 0"
