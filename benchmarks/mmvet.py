"""MM-Vet (lmms-lab/MMVet, test): the row converter and its BenchJudge, the few-shot 0-1 grader of
yuweihao/MM-Vet's mm-vet_evaluator.py (prompt text verbatim in prompts.py), with its re-asks of a grade it
cannot read."""
from benchmarks.prompts import MMVET_PROMPT
from reward import after_thinking, clip_start

# mm-vet_evaluator.py re-asks a grade that is no number in [0, 1] with this line after the prompt, its
# temperature raised by 0.5 at each try; after its fifth try the sample scores 0
RETRY_SUFFIX = "\nPredict the correctness of the answer (digit): "
RETRIES = 4


def convert_mmvet(row, spec, where):
    question = str(row["question"])
    return {"question": question, "stem": question, "answer": str(row["answer"]), "route": "mmvet"}


def mmvet_prompt(example, response):
    """As mm-vet_evaluator.py builds it: the prompt, a newline, then "question | gold | prediction | " with
    spaces put around <AND>/<OR>. The prediction is the reply after the reasoning (the answer a user
    reads)."""
    gold = str(example["answer"]).replace("<AND>", " <AND> ").replace("<OR>", " <OR> ")
    return MMVET_PROMPT + "\n" + " | ".join([example["stem"], gold, clip_start(after_thinking(response)), ""])


def mmvet_retry(example, response, attempt):
    """The re-ask of mm-vet_evaluator.py's `runs`: the prompt with RETRY_SUFFIX, at temperature 0 for the
    first re-ask and 0.5 more for each one after it. Upstream parses four re-asks (temperatures 0, 0.5, 1.0,
    1.5) and then sends a fifth it never reads; that one is not sent here (RETRIES = 4)."""
    return mmvet_prompt(example, response) + RETRY_SUFFIX, 0.5 * (attempt - 1)


def parse_mmvet(reply, example):
    """Upstream reads the first space-separated token as a float in [0, 1]; anything else is malformed (and
    re-asked)."""
    token = after_thinking(reply).split(" ")[0].strip()
    try:
        score = float(token)
    except ValueError:
        return None
    return {"score": score, "extracted": token} if 0.0 <= score <= 1.0 else None
