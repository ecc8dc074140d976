"""MathVista testmini (AI4Math/MathVista): the question as upstream's query states it, and its deterministic
parser, the first step of Rule+Judge (docs/EVAL.md), as lupantech/MathVista's evaluation/extract_answer.py and
calculate_score.py (normalize_extracted_answer, safe_equal) score an answer; what the parser cannot read goes
to the judge.

Upstream's query (evaluation/build_query.py, the hub's `query` column) carries a hint that says what the
answer is: an integer, a float with one or two decimal places, a Python list. The hint's format half ("and
provide the final value, e.g., 1.23, 1.34, 1.45, at the end") is a directive the closer replaces; its
content half is kept [ours: --no-mathvista-hint drops it], and the multiple-choice hint, only a format
directive, goes.
"""
import ast
import re

from reward import as_number, normalize

# build_query.py's hints without their format directive (the words before ", and provide ... at the end")
HINTS = {"integer": "Hint: Please answer the question requiring an integer answer.",
         1: "Hint: Please answer the question requiring a floating-point number with one decimal place.",
         2: "Hint: Please answer the question requiring a floating-point number with two decimal places.",
         "list": "Hint: Please answer the question requiring a Python list as an answer."}


def convert_mathvista(row, spec, where):
    """The question (with its unit, as upstream's query writes it, and the hint), the choices lettered for a
    multi_choice row (the gold answer is the choice's text), the fields the parser needs. A row without
    question_type / answer_type (a local file of another shape) is graded by the generic rule instead."""
    choices = [str(c) for c in (row.get("choices") or [])]
    question = str(row["question"])
    if row.get("unit"):
        question += f" (Unit: {row['unit']})"
    qtype, atype = row.get("question_type"), row.get("answer_type")
    precision = row.get("precision")
    hint = HINTS.get(atype) if atype in ("integer", "list") else \
        HINTS.get(int(precision)) if atype == "float" and precision is not None else None
    if hint and spec.get("options", {}).get("mathvista_hint", True):
        question = f"{question}\n{hint}"
    gold = str(row["answer"]).strip()
    fields = {"question": question, "route": "mathvista" if qtype and atype else "rule",
              "mathvista": {"question_type": qtype, "answer_type": atype, "choices": choices,
                            "precision": None if precision is None else int(precision), "answer": gold}}
    if choices:
        if gold not in choices:
            return "answer_format"
        route = fields["route"] if fields["route"] == "mathvista" else "choice"
        return {**fields, "route": route, "choices": choices, "letter_index": choices.index(gold)}
    return {**fields, "answer": gold}


def mathvista_verdict(box, example):
    """1.0 / 0.0 for a boxed answer the parser reads, None for one it cannot (the judge decides).
    multi_choice: "(B)" or a lone letter is that option, an option's own text is itself (upstream then picks
    the option nearest by edit distance for anything else, after GPT extraction: here the judge);
    integer: the number truncated (int(float(x))); float: rounded to the row's precision; list: the Python
    list; each then compared with the gold answer as text (safe_equal)."""
    info = example["mathvista"]
    text = box.strip()
    if info["question_type"] == "multi_choice":
        choices = info["choices"]
        letters = re.findall(r"\(([a-zA-Z])\)", text)
        letter = letters[0].upper() if letters else _lone_letter(text)
        if letter is not None and ord(letter) - ord("A") < len(choices):
            return float(choices[ord(letter) - ord("A")] == info["answer"])
        return float(text == info["answer"]) if text in choices else None
    if info["answer_type"] in ("integer", "float"):
        value = _number(text)
        if value is None:
            return None
        if info["answer_type"] == "integer":
            return float(str(int(value)) == info["answer"])
        return float(str(round(value, info["precision"] or 0)) == info["answer"])
    if info["answer_type"] == "list":
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return None
        return float(str(list(value)) == info["answer"]) if isinstance(value, (list, tuple)) else None
    return None


def _lone_letter(text):
    found = re.fullmatch(r"\(?([A-Za-z])[).:]?", normalize(text))  # B, B., B), \text{B}
    return found.group(1).upper() if found else None


def _number(text):
    """The boxed number as a float: plain, scientific, a fraction, 1,000-style, with a unit after it."""
    try:
        return float(text)
    except ValueError:
        pass
    value = as_number(text)
    return None if value is None else float(value)
