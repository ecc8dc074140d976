"""CharXiv (princeton-nlp/CharXiv, validation): the reasoning questions (the paper's CharXiv) and the
descriptive ones (family `extra`), their row converters and BenchJudge graders, as the official repository's
src/reasoning_utils.py, src/descriptive_utils.py and src/constants.py build them (prompt texts verbatim in
prompts.py).

The rubric of a reasoning question is picked by its answer type, the official JSON's `inst_category`, which
the hub set calls `reasoning_a_type` (1 text in chart, 2 text in general, 3 number in chart, 4 number in
general); `reasoning_q_source` is who wrote the question, not a rubric. lmms-eval's charxiv task reads the
rubric from `reasoning_q_source`, so most of its reasoning rows are judged by another rubric; this module
follows the official evaluator.
"""
from benchmarks.judges import json_object
from benchmarks.prompts import (
    DESCRIPTIVE_GRADING_ICL,
    DESCRIPTIVE_GRADING_PREFIX,
    DESCRIPTIVE_GRADING_QMAP,
    DESCRIPTIVE_RESP_INST,
    REASONING_GRADING_INST,
    REASONING_GRADING_PREFIX,
)
from reward import clip_start

# ---------------------------------------------------------------------------------------------------------
# reasoning questions


def number_instruction(answer):
    """reasoning_utils.get_number_instruction: what a category-4 answer must look like, read off the gold
    answer (an exact integer, or a number with as many decimal places as it has)."""
    parts = str(answer).split(".")
    if len(parts) == 1:
        return "* Your final answer must be an exact integer."
    return f"* Your final answer must be a number with {len(parts[1])} decimal places."


def convert_charxiv_reasoning(row, spec, where):
    """The raw question; upstream's answer-format lines (REASONING_RESP_INST) are directives the closer
    replaces, except category 4's, which says what the number must be (an exact integer, N decimal places):
    it is kept after the question [ours: --no-charxiv-number-instruction drops it]. The judge gets the raw
    question, as upstream's grader does."""
    category = row.get("reasoning_a_type", row.get("inst_category"))
    if category is None:
        raise ValueError(f"{where}: CharXiv needs the answer type reasoning_a_type (inst_category in the "
                         f"official JSON), 1-4 (has {sorted(row)})")
    try:
        category = int(category)
    except (TypeError, ValueError):
        category = None
    if category not in REASONING_GRADING_INST:
        raise ValueError(f"{where}: reasoning_a_type must be 1-4, got {row.get('reasoning_a_type')!r}")
    stem, answer = str(row["reasoning_q"]), str(row["reasoning_a"])
    question = stem
    if category == 4 and spec.get("options", {}).get("charxiv_number_instruction", True):
        question = f"{stem}\n{number_instruction(answer)}"
    return {"question": question, "stem": stem, "answer": answer, "route": "charxiv_reasoning",
            "inst_category": category}


def charxiv_reasoning_prompt(example, response):
    """build_reasoning_grading_queries: the prefix, then the rules of the question's answer type with the raw
    question, the gold answer and the full response filled in."""
    return REASONING_GRADING_PREFIX + REASONING_GRADING_INST[example["inst_category"]] \
        .replace("<|question|>", example["stem"]).replace("<|ground_truth|>", str(example["answer"])) \
        .replace("<|response|>", clip_start(response))


def parse_charxiv_reasoning(reply, example):
    """{extracted_answer (upstream reads this key; its prompt names it extract_answer: both count), score
    0|1}. Upstream re-asks up to 10 times on a reply that does not parse and then scores the row -1; with a
    greedy judge the same prompt gives the same reply, so here the row scores 0, counted as malformed."""
    obj = json_object(reply)
    if obj is None or obj.get("score") not in (0, 1) or isinstance(obj.get("score"), bool):
        return None
    extracted = obj.get("extracted_answer", obj.get("extract_answer"))
    return None if extracted is None else {"score": float(obj["score"]), "extracted": str(extracted)}


# ---------------------------------------------------------------------------------------------------------
# descriptive questions


def charxiv_rubric(qid):
    """get_rubric: the in-context rubric of a descriptive template id."""
    for key, ids in (("title", [1]), ("ocr", [2, 3, 4, 5, 6, 7]), ("quant", [8, 9, 10, 12, 14, 15, 17, 19]),
                     ("bool", [11]), ("enum", [13]), ("trend", [16]), ("layout", [18])):
        if qid in ids:
            return DESCRIPTIVE_GRADING_ICL[key]
    raise ValueError(f"CharXiv descriptive template id {qid} has no rubric")


def charxiv_descriptive_prompt(example, response):
    """build_descriptive_grading_queries with one (response, gold) pair per query (upstream batches up to 5 of
    one template; one per query keeps a judge failure to its own row)."""
    qid = example["template"]
    prefix = DESCRIPTIVE_GRADING_PREFIX.replace("<|NUM_TRIPLETS|>", "1") \
        .replace("<|OVERARCHING_QUESTION|>", DESCRIPTIVE_GRADING_QMAP[qid]) \
        .replace("<|JSON_KEYS|>", str(["extract_answer_T1", "score_T1"]))
    pair = f"T1:\nResponse 1: {clip_start(response)}\nGround Truth 1: {example['answer']}\n\n"
    return prefix + charxiv_rubric(qid) + pair


def parse_charxiv_descriptive(reply, example):
    obj = json_object(reply)
    if obj is None or "extract_answer_T1" not in obj or obj.get("score_T1") not in (0, 1) \
            or isinstance(obj.get("score_T1"), bool):
        return None
    return {"score": float(obj["score_T1"]), "extracted": str(obj["extract_answer_T1"])}


def charxiv_subplot(row):
    loc = row.get("subplot_loc")
    return [row.get("subplot_row"), row.get("subplot_col")] if loc is None else loc


def charxiv_descriptive_question(qid, subplot_loc):
    """descriptive_query_helper: the template's question, with the subplot it is about."""
    if qid in (18, 19):
        return DESCRIPTIVE_RESP_INST[qid]
    if isinstance(subplot_loc, list):
        prefix = "For the current plot, " if subplot_loc[0] == 0 else \
            f"For the subplot at row {subplot_loc[0]} and column {subplot_loc[1]}, "
    elif isinstance(subplot_loc, str):
        prefix = f"For {subplot_loc}, "
    else:
        # ValueError kept: a data error (eval.py reports a ValueError by its text)
        raise ValueError(f"subplot_loc must be a list or a string, got {subplot_loc!r}")  # noqa: TRY004
    return DESCRIPTIVE_RESP_INST[qid].format(prefix)


def expand_charxiv_descriptive(row, where):
    """The four descriptive questions of a figure, each its own row (as lmms-eval's process_docs repeats
    them)."""
    return [(f"{where}#d{k}", {**row, "_descriptive": k}) for k in (1, 2, 3, 4)]


def convert_charxiv_descriptive(row, spec, where):
    k = row["_descriptive"]
    qid = int(row[f"descriptive_q{k}"])
    if qid not in DESCRIPTIVE_GRADING_QMAP:
        raise ValueError(f"{where}: descriptive_q{k} must be a template id 1-19, got {qid}")
    # the template's own lines say what the answer must hold ("Not Applicable" cases): part of the question
    question = charxiv_descriptive_question(qid, charxiv_subplot(row))
    return {"question": question, "stem": question, "answer": str(row[f"descriptive_a{k}"]),
            "route": "charxiv_descriptive", "template": qid, "id_suffix": f"d{k}"}
