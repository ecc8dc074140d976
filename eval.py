"""Benchmark evaluation, as the paper scores it (its appendix B.2; docs/EVAL.md, docs/evaluation.md).

    python eval.py --model runs/demo/zppo/checkpoints/step_000010 --benchmarks arithmetic
    python eval.py --model Qwen3.5-0.8B --benchmarks aime2025,mmlu_redux,hle --judge Qwen3.5-27B \\
        --out results.json --log-samples
    python eval.py --model M --benchmarks gsm8k --data-dir benchmarks/   # offline: benchmarks/gsm8k.jsonl
    python eval.py --list                                                # every benchmark, no model needed

Protocol: each benchmark's own format directives are stripped and only the spec's closer is appended; every
sampling field is set (score.SAMPLING); the score is avg@k with its standard error over questions; each
benchmark is scored by its protocol in the paper's Tables 5-7 (Exact+Judge, Rule+Judge, Det., BenchJudge:
benchmarks/score.py). The benchmarks themselves, their loading and scoring live in the benchmarks/ package;
this file is the command: its flags, the engines, the outputs.

Runs survive: every finished chunk of questions is kept in a row cache (benchmarks/cache.py; --cache-dir,
--no-cache) and each chunk's sampling is seeded, so a run that is killed and started again with the same
command takes the finished rows from the cache and ends with the file an uninterrupted run writes. Until
every benchmark has run, --out says "status": "incomplete" and reports no result. One eval.py writes an
output at a time: a second one on the same --out / --responses stops at once.
"""
import importlib.util
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field

from transformers import HfArgumentParser

from benchmarks import BENCHMARKS
from benchmarks.cache import OutputLocked, RowCache, cache_file, cache_root, lock_outputs, release_outputs
from benchmarks.llm import parse_hle, yes_no_verdict  # noqa: F401 (callers read the BenchJudge parsers here)
from benchmarks.load import REDUX_ROWS
from benchmarks.report import list_table, markdown_table, results_file, sample_records
from benchmarks.score import (  # noqa: F401 (evaluate, score_groups: the API train.py's eval and demo use)
    SAMPLING,
    evaluate,
    judge_failures,
    run_benchmarks,
    score_groups,
)


@dataclass
class EvalConfig:
    model: str = field(metadata={"help": "model directory, hub id, bare Qwen name or .gguf file"})
    benchmarks: str = field(default="gsm8k", metadata={
        "help": f"comma-separated, from: {', '.join(BENCHMARKS)}"})
    data_dir: str | None = field(default=None, metadata={
        "help": "folder of NAME.jsonl files (rows as the hub serves them), tried before the hub"})
    limit: int | None = field(default=None, metadata={
        "help": "evaluate the first N questions of each benchmark"})
    samples: int = field(default=1, metadata={"help": "k samples per question (avg@k)"})
    max_new_tokens: int = field(default=12_288, metadata={"help": "response cap (paper: 12,288)"})
    judge: str | None = field(default=None, metadata={
        "help": "judge model (paper: the teacher, Qwen3.5-27B-FP8): Exact+Judge fallback and BenchJudge"})
    judge_url: str | None = field(default=None, metadata={"help": "OpenAI-compatible server serving --judge"})
    judge_thinking: str = field(default="off", metadata={
        "choices": ["off", "on", "template"],
        "help": "the chat template's thinking switch (enable_thinking) in the judge's calls, whose cap (512 "
                "tokens) a thinking block can fill before the verdict [ours: off; template: the template's "
                "default, which for Qwen3.5 thinks]"})
    judge_api_key_env: str | None = field(default=None, metadata={
        "help": "environment variable holding the judge server's API key, sent as a bearer token (default "
                "OPENAI_API_KEY, or a key in --judge-url's user part); its name is recorded, never the key"})
    judge_timeout: float = field(default=600.0, metadata={
        "help": "seconds per judge request, all of it (remote judge)"})
    judge_retries: int = field(default=3, metadata={
        "help": "retries per judge request after a failure (remote judge)"})
    mmlu_redux_rows: str = field(default="ok", metadata={
        "choices": list(REDUX_ROWS),
        "help": "MMLU-Redux rows: ok = only rows annotated ok (lm-evaluation-harness); corrected = every "
                "row, wrong gold answers replaced by correct_answer, multi-answer rows skipped (evalscope)"})
    video_fps: float = field(default=2.0, metadata={
        "help": "video benchmarks: frames sampled per second of the video (the paper gives none: ours)"})
    video_max_frames: int = field(default=32, metadata={
        "help": "video benchmarks: at most this many frames per video, evenly spaced over the whole clip"})
    video_dir: str | None = field(default=None, metadata={
        "help": "folder of the unpacked videos of Video-MME (and its subtitle/), VideoMMMU, MVBench"})
    multichallenge_closer: bool = field(default=True, metadata={
        "help": "append the closer to MultiChallenge's last user turn, as to every benchmark (paper); "
                "--no-multichallenge-closer sends the conversation untouched (our option)"})
    mathvista_hint: bool = field(default=True, metadata={
        "help": "MathVista: the content of upstream's hint (an integer, N decimal places, a list) after the "
                "question, its format directive dropped; --no-mathvista-hint drops the hint (ours)"})
    charxiv_number_instruction: bool = field(default=True, metadata={
        "help": "CharXiv answer type 4: upstream's 'exact integer / N decimal places' line after the "
                "question; --no-charxiv-number-instruction drops it with the other directives (ours)"})
    image_min_pixels: int = field(default=256 * 32 * 32, metadata={
        "help": "images are resized to at least this many pixels (paper: 256x32x32), whatever the "
                "checkpoint's own processor says"})
    image_max_pixels: int = field(default=1280 * 32 * 32, metadata={
        "help": "and at most this many (paper: 1280x32x32)"})
    batch_size: int = field(default=64, metadata={
        "help": "sequences per generate call (transformers engine)"})
    chunk_size: int = field(default=512, metadata={
        "help": "questions sent to the engine at a time; each finished chunk is cached, and seeded on its "
                "own, so a killed run resumes from its last finished chunk"})
    engine: str = field(default="auto", metadata={
        "choices": ["auto", "transformers", "vllm"],
        "help": "auto = vllm on GPU if installed, else transformers"})
    vllm_gpu_memory_utilization: float = field(default=0.3, metadata={
        "help": "share of the GPU vLLM may take (on CPU: of the machine's memory)"})
    seed: int = field(default=0, metadata={"help": "sampling seed (with the benchmark and chunk, per chunk)"})
    out: str | None = field(default=None, metadata={
        "help": "results JSON (lm-evaluation-harness's shape); status \"incomplete\" until the run ends"})
    responses: str | None = field(default=None, metadata={
        "help": "every response, extracted answer, route and verdict (JSONL), appended after every "
                "benchmark"})
    log_samples: bool = field(default=False, metadata={
        "help": "with --out: per-sample logs as lm-evaluation-harness writes them, OUT_samples_NAME.jsonl"})
    cache: bool = field(default=True, metadata={
        "help": "keep finished rows and reuse them on a rerun of the same model and settings; --no-cache "
                "generates everything"})
    cache_dir: str | None = field(default=None, metadata={
        "help": "the row cache's folder (default ~/.cache/zppo/eval)"})


def check(cfg):
    """The command's mistakes, found before anything loads; the benchmark names."""
    names = [n.strip() for n in cfg.benchmarks.split(",") if n.strip()]
    if not names:
        raise ValueError("--benchmarks names no benchmark")
    from config import finite_problems

    rules = [("samples", cfg.samples >= 1, ">= 1"), ("chunk_size", cfg.chunk_size >= 1, ">= 1"),
             ("limit", cfg.limit is None or cfg.limit >= 1, ">= 1"),
             ("max_new_tokens", cfg.max_new_tokens >= 1, ">= 1"), ("batch_size", cfg.batch_size >= 1, ">= 1"),
             ("image_min_pixels", cfg.image_min_pixels >= 1, ">= 1"),
             ("image_max_pixels", cfg.image_max_pixels >= cfg.image_min_pixels, ">= --image-min-pixels"),
             ("judge_timeout", cfg.judge_timeout > 0, "> 0"),
             ("judge_retries", cfg.judge_retries >= 0, ">= 0"),
             ("video_fps", cfg.video_fps > 0, "> 0"), ("video_max_frames", cfg.video_max_frames >= 2, ">= 2"),
             ("vllm_gpu_memory_utilization", 0 < cfg.vllm_gpu_memory_utilization <= 1, "in (0, 1]")]
    problems = finite_problems(cfg) + [f"--{name.replace('_', '-')} {getattr(cfg, name)}: must be {need}"
                                       for name, ok, need in rules if not ok]
    if problems:
        raise SystemExit("eval.py: cannot start:\n  " + "\n  ".join(problems))
    if cfg.log_samples and not cfg.out:
        raise ValueError("--log-samples writes next to --out: give --out")
    for path in (cfg.out, cfg.responses):  # found out now, not after the first benchmark has run
        if path and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            raise FileNotFoundError(f"the folder of {path} does not exist")
    for name in names:
        if name not in BENCHMARKS:  # run_benchmarks reports it as failed; say so before the model loads
            print(f"[warning] unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}", file=sys.stderr)
    if os.path.isdir(cfg.model):  # a cut weight file, named (safetensors' own error names no file)
        from checkpoint import safetensors_problem

        for name in sorted(os.listdir(cfg.model)):
            problem = (safetensors_problem(os.path.join(cfg.model, name)) if name.endswith(".safetensors")
                       else None)
            if problem:
                raise ValueError(f"--model {cfg.model}: {problem}; evaluate a complete checkpoint "
                                 "(for a run, an earlier one of its checkpoints/)")
    return names


def samples_path(cfg, name):
    """--log-samples: OUT_samples_NAME.jsonl beside --out (lm-evaluation-harness's samples_TASK files)."""
    return f"{cfg.out.removesuffix('.json')}_samples_{name}.jsonl"


def load_engines(cfg, device):
    """The judge first (one that cannot work stops before the model loads), then the student's engine, every
    checkpoint at the paper's image resolution (a base model's processor would otherwise use its own
    defaults and a trained one its training bounds)."""
    from config import vllm_missing
    from engines.transformers_engine import TransformersEngine
    from models import frozen_engine, load_model, load_tokenizer, resolve_model_name, short_calls
    from rollout import VLLMEngine, pick_engine, vllm_dtype

    judge = frozen_engine(cfg.judge, cfg.judge_url, device=device, batch_size=cfg.batch_size,
                          timeout=cfg.judge_timeout, retries=cfg.judge_retries, role="judge",
                          api_key_env=cfg.judge_api_key_env)
    judge = short_calls(judge, cfg.judge_thinking)
    pixels = (cfg.image_min_pixels, cfg.image_max_pixels)
    if pick_engine(cfg.engine, device) == "vllm":
        if importlib.util.find_spec("vllm") is None:
            raise SystemExit(vllm_missing("--engine vllm"))
        tokenizer, _ = load_tokenizer(resolve_model_name(cfg.model), pixels=pixels)
        engine = VLLMEngine(resolve_model_name(cfg.model), tokenizer, cfg.vllm_gpu_memory_utilization,
                            seed=cfg.seed, dtype=vllm_dtype("auto", device), pixels=pixels)
        return engine, judge, "vllm"
    model, tokenizer = load_model(cfg.model, device=device, pixels=pixels)
    return TransformersEngine(model.eval(), tokenizer, max_batch_size=cfg.batch_size), judge, "transformers"


def main(cfg):
    """Evaluate; the summary is returned. --out is written at the start ("incomplete"), after every benchmark
    (still "incomplete", the finished and pending names) and at the end ("complete", the results)."""
    from config import url_problem

    names = check(cfg)
    if cfg.judge_url and url_problem(cfg.judge_url):
        raise ValueError(f"--judge-url {url_problem(cfg.judge_url)}")
    outputs = [cfg.out, cfg.responses, *([samples_path(cfg, n) for n in names] if cfg.log_samples else [])]
    held = lock_outputs(outputs)  # before anything loads: a second writer stops at once
    try:
        return run_eval(cfg, names)
    finally:
        release_outputs(held)


def run_eval(cfg, names):
    """main's work once the outputs are locked."""
    import torch

    from checkpoint import atomic_write
    from config import redact_url

    started = time.time()
    torch.manual_seed(cfg.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    config = dict(asdict(cfg), judge_url=redact_url(cfg.judge_url), device=device)  # never the key
    sampling = dict(SAMPLING)

    def write_out(summary, status):
        if cfg.out:  # written whole, then renamed: a crash never leaves half a file
            atomic_write(cfg.out, json.dumps(results_file(summary, names, config, sampling, started, status),
                                             indent=1, default=str))

    write_out({"benchmarks": {}, "macro": {}, "macro_over": {}, "macro_missing": {}, "errors": {}},
              "incomplete")
    if cfg.responses:
        open(cfg.responses, "w").close()  # a fresh file; every benchmark's records are appended when it ends
    engine, judge, engine_kind = load_engines(cfg, device)
    judge_id = f"{cfg.judge}@{redact_url(cfg.judge_url)}/thinking-{cfg.judge_thinking}" if cfg.judge else None
    settings = {"samples": cfg.samples, "max_new_tokens": cfg.max_new_tokens, "sampling": sampling,
                "seed": cfg.seed, "pixels": [cfg.image_min_pixels, cfg.image_max_pixels],
                "engine": engine_kind}

    def cache_for(name):
        if not cfg.cache:
            return None
        cache = RowCache(cache_file(cfg.cache_dir or cache_root(), cfg.model, name, settings), judge=judge_id)
        if cache.rows:
            print(f"[cache] {name}: {len(cache.rows)} finished rows in {cache.path}", file=sys.stderr)
        return cache

    written = set()

    def write(summary):
        for name, r in summary["benchmarks"].items():
            if name in written:
                continue
            written.add(name)
            if cfg.responses:
                with open(cfg.responses, "a") as f:
                    f.writelines(json.dumps({"benchmark": name, **rec}, ensure_ascii=False) + "\n"
                                 for rec in r["records"])
            if cfg.log_samples:
                atomic_write(samples_path(cfg, name), "".join(
                    json.dumps(s, ensure_ascii=False, default=str) + "\n"
                    for s in sample_records(r["examples"], r["records"], name)))
        write_out(summary, "incomplete")

    options = {"mathvista_hint": cfg.mathvista_hint,
               "charxiv_number_instruction": cfg.charxiv_number_instruction}
    summary = run_benchmarks(engine, names, cfg.samples, cfg.max_new_tokens, judge, cfg.data_dir, cfg.limit,
                             redux_rows=cfg.mmlu_redux_rows, on_update=write,
                             video=dict(fps=cfg.video_fps, max_frames=cfg.video_max_frames,
                                        dir=cfg.video_dir),
                             multichallenge_closer=cfg.multichallenge_closer, options=options,
                             cache_for=cache_for, seed=cfg.seed, chunk=cfg.chunk_size)
    write_out(summary, "complete")
    print(markdown_table(summary))
    reused = {n: r["cached"] for n, r in summary["benchmarks"].items() if r.get("cached")}
    if reused:
        print("rows taken from the cache: " + ", ".join(f"{n} {k}" for n, k in reused.items()),
              file=sys.stderr)
    if summary["errors"]:
        failed = ", ".join(summary["errors"])
        print(f"eval.py: {len(summary['errors'])} of {len(names)} benchmarks failed: {failed}",
              file=sys.stderr)
    if judge_failures(summary):
        print(f"eval.py: scores that rest on failed judge calls: {', '.join(judge_failures(summary))}",
              file=sys.stderr)
    return summary


def periodic_eval(student, teacher, cfg, step, log, log_path, accelerator):
    """eval.py's benchmarks every --eval-every steps and at the end, added to the step's metrics line; the
    teacher judges free-form answers. It runs after the step's checkpoint is saved, and its sampling draws on
    a forked random state, so a run resumes exactly whether or not it evaluates. A failure is reported
    (eval/failed) and training goes on."""
    import torch

    from checkpoint import add_to_step

    if not cfg.eval_benchmarks or not ((cfg.eval_every and step % cfg.eval_every == 0) or step == cfg.steps):
        return
    try:
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=devices):
            summary = run_benchmarks(student, cfg.eval_benchmarks.split(","), cfg.eval_samples,
                                     cfg.eval_max_new_tokens, judge=teacher, data_dir=cfg.eval_data_dir,
                                     limit=cfg.eval_limit, log=log)
        metrics = {f"eval/{name}": r["accuracy"] for name, r in summary["benchmarks"].items()}
        metrics.update({f"eval/macro_{fam}": acc for fam, acc in summary["macro"].items()})
        for name, r in summary["benchmarks"].items():  # judge calls that failed were scored 0: a lower bound
            if r.get("judge_failed"):
                metrics[f"eval/{name}_judge_failed"] = r["judge_failed"]
        if summary["errors"]:  # a benchmark that failed (a bad file line) is reported, not raised
            log(f"step {step}: evaluation of {', '.join(summary['errors'])} failed; training goes on")
            metrics["eval/failed"] = 1.0
        log(f"step {step}: " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
    except Exception as e:  # noqa: BLE001 (an evaluation costs its own numbers at most, never the run)
        log(f"step {step}: evaluation failed ({type(e).__name__}: {e}); training goes on")
        metrics = {"eval/failed": 1.0}
    add_to_step(step, metrics, log_path, accelerator)


if __name__ == "__main__":
    if "--list" in sys.argv[1:]:  # no model needed
        print(list_table())
        sys.exit(0)
    try:
        summary = main(HfArgumentParser(EvalConfig).parse_args_into_dataclasses()[0])
    except OutputLocked as e:  # another eval.py holds an output: said plainly, no trace
        sys.exit(f"eval.py: {e}")
    sys.exit(1 if summary["errors"] or judge_failures(summary) else 0)
