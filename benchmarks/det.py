"""The Det. protocol (docs/EVAL.md): the benchmark's own deterministic metric, no judge. What its scorers read
(`final_answer`), the edit distance they share, and InfographicVQA's ANLS. OCRBench v2's scorer is
ocrbench.py."""
from reward import final_boxed, final_part

# ---------------------------------------------------------------------------------------------------------
# what a Det. scorer reads: the boxed answer the closer asks for, else the reply after the reasoning


def final_answer(text):
    """The last \\boxed{} of the final answer (after the reasoning), read whatever its length (a full page,
    a table), else that final answer itself, stripped. A deterministic metric has no judge to look inside the
    reasoning, so the reasoning is never scored: a box written only there is no answer."""
    boxed = final_boxed(text)
    return boxed if boxed is not None else final_part(text).strip()


def levenshtein(a, b):
    """Edit distance (insertions, deletions, substitutions of one character each)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


# ---------------------------------------------------------------------------------------------------------
# InfographicVQA: ANLS as the Robust Reading Competition's evaluation script defines it
# (infographicsvqa_eval.py; lmms-eval's api/metrics.py `anls` and Qwen-VL's eval_mm carry the same function):
# per question, the best over the gold answers of 1 - NL, NL = edit distance of the lower-cased,
# whitespace-collapsed strings over the longer of the two *raw* lengths (upstream's quirk, kept); below the
# 0.5 threshold the question scores 0.


def anls(prediction, golds, threshold=0.5):
    golds = golds if isinstance(golds, list) else [golds]
    pred = str(prediction)
    best = 1.0  # the smallest normalised distance over the gold answers
    for gold in golds:
        gold = str(gold)
        dist = levenshtein(" ".join(gold.strip().lower().split()), " ".join(pred.strip().lower().split()))
        length = max(len(gold.upper()), len(pred.upper()))
        best = min(best, 0.0 if length == 0 else dist / length)
    score = 1.0 - best
    return 0.0 if score < threshold else score


def score_anls(text, example):
    return anls(final_answer(text), example["answer"])


def convert_infovqa(row, spec, where):
    answers = row["answers"]
    answers = [str(a) for a in answers] if isinstance(answers, list) else [str(answers)]
    if not answers or not any(a.strip() for a in answers):
        return "answer_format"
    return {"question": str(row["question"]), "answer": answers, "route": "anls"}
