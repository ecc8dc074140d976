"""Evaluation: a model's accuracy on a question set, prompted with the spec's answer-format closer.

    python eval.py --model runs/demo/checkpoints/step_000012 --data arithmetic --limit 200
    python eval.py --model Qwen3.5-0.8B --data test.jsonl --samples 4 --out results.json

Score = mean reward over k samples per question (avg@k; k = 1 is pass@1), with its standard error
over questions.
"""
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Optional

from transformers import HfArgumentParser

from data import load_examples
from reformulate import with_closer
from reward import grade, last_boxed
from rollout import TransformersEngine, load_model


@dataclass
class EvalConfig:
    model: str = field(metadata={"help": "model directory, hub id, bare Qwen name or .gguf file"})
    data: str = field(default="arithmetic", metadata={"help": "'arithmetic', a .jsonl file, or a hub data set"})
    split: str = field(default="test", metadata={"help": "split (hub sets; 'arithmetic' draws held-out items)"})
    data_config: Optional[str] = field(default=None, metadata={"help": "hub data set config"})
    limit: Optional[int] = field(default=None, metadata={"help": "evaluate the first N questions"})
    samples: int = field(default=1, metadata={"help": "k samples per question (avg@k)"})
    max_new_tokens: int = field(default=1024, metadata={"help": "response cap"})
    temperature: float = field(default=0.6, metadata={"help": "0 = greedy"})
    top_p: float = field(default=0.95, metadata={"help": "nucleus sampling"})
    top_k: int = field(default=20, metadata={"help": "0 disables top-k"})
    batch_size: int = field(default=64, metadata={"help": "sequences per generate call"})
    seed: int = field(default=0, metadata={"help": "sampling seed"})
    out: Optional[str] = field(default=None, metadata={"help": "write the summary and every response here (JSON)"})


def evaluate(engine, examples, samples=1, max_new_tokens=1024, temperature=0.6, top_p=0.95, top_k=20):
    """avg@k accuracy of `engine` on `examples`; all questions go through the engine in one batch."""
    groups = engine.generate([with_closer(ex["question"]) for ex in examples], n=samples,
                             max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k)
    records, per_question = [], []
    for ex, group in zip(examples, groups):
        scores = [grade(r.text, ex["answer"]) for r in group]
        per_question.append(sum(scores) / len(scores))
        records += [{"id": ex["id"], "answer": ex["answer"], "response": r.text, "extracted": last_boxed(r.text),
                     "correct": bool(s)} for r, s in zip(group, scores)]
    n = len(per_question)
    mean = sum(per_question) / n
    var = sum((x - mean) ** 2 for x in per_question) / (n - 1) if n > 1 else 0.0
    return {"accuracy": mean, "stderr": math.sqrt(var / n), "questions": n, "samples": samples, "records": records}


def main(cfg):
    import torch

    torch.manual_seed(cfg.seed)
    model, tokenizer = load_model(cfg.model, device="cuda" if torch.cuda.is_available() else "cpu")
    engine = TransformersEngine(model.eval(), tokenizer, max_batch_size=cfg.batch_size)
    examples = load_examples(cfg.data, split=cfg.split, limit=cfg.limit, seed=cfg.seed, config=cfg.data_config)
    result = evaluate(engine, examples, cfg.samples, cfg.max_new_tokens, cfg.temperature, cfg.top_p, cfg.top_k)
    print(f"{cfg.data}: accuracy {100 * result['accuracy']:.1f} ± {100 * result['stderr']:.1f} "
          f"(avg@{cfg.samples} over {result['questions']} questions)")
    if cfg.out:
        with open(cfg.out, "w") as f:
            json.dump({"config": asdict(cfg), **result}, f, indent=1)
    return result


if __name__ == "__main__":
    main(HfArgumentParser(EvalConfig).parse_args_into_dataclasses()[0])
