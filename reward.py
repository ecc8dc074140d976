"""The binary reward: is the last \\boxed{} answer of a response equivalent to the gold answer?

Spec section "Reward". The rule grader (`grade`) checks short answers and letters; a gold answer no
rule can check (free-form prose) goes to an LLM judge (`score_responses` routes each pair). Training
rewards and eval.py's scores both go through `score_responses`.
Model output is untrusted: the scan is linear and bounded, over-long answers
are compared as text only, exponent towers and huge factorials never reach sympy (Python's big
integers would compute them in C where no time limit can interrupt), and math-verify runs under its
own time limit. Nothing is ever eval'd.
"""
import json
import re
from fractions import Fraction

MAX_ANSWER_CHARS = 1_000  # a boxed answer longer than this is not an answer
MAX_BOXES_TRIED = 20  # unbalanced \boxed{ candidates examined from the end before giving up
SYMBOLIC_TIMEOUT_S = 2  # math-verify's own (signal-based) limit per parse / verify


def last_boxed(text, max_chars=MAX_ANSWER_CHARS):
    """Content of the last \\boxed{...} with balanced braces, or None."""
    end = len(text)
    for _ in range(MAX_BOXES_TRIED):
        start = text.rfind("\\boxed", 0, end)
        if start < 0:
            return None
        i = start + len("\\boxed")
        while i < len(text) and i < start + 16 and text[i] == " ":
            i += 1
        if i < len(text) and text[i] == "{":
            depth, j = 0, i
            limit = min(len(text), i + max_chars + 2)
            while j < limit:
                c = text[j]
                if c == "\\" and j + 1 < limit:  # an escaped brace does not count
                    j += 2
                    continue
                depth += (c == "{") - (c == "}")
                if depth == 0:
                    return text[i + 1:j].strip()
                j += 1
        end = start  # unbalanced or too long: try the previous box
    return None


_UNWRAP = re.compile(r"\\(?:text|textbf|mathrm|mathbf|mbox|operatorname)\s*\{([^{}]*)\}")
_SPACING = re.compile(r"\\[,;:! ]|\\(?:left|right|displaystyle)\b|\$|~")
_NUMBER = r"[-+]?(?:\d[\d,]*(?:\.\d*)?|\.\d+)(?:/\d+)?"
_UNIT_TAIL = re.compile(rf"^({_NUMBER})\s*[A-Za-z][A-Za-z ./]*$")


def normalize(ans):
    """Canonical text form: LaTeX wrappers, spacing, a leading $, a trailing period and units dropped."""
    s = ans.strip()
    s = _UNWRAP.sub(r"\1", s)
    s = _SPACING.sub("", s.replace("\\$", "")).replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = s.strip().rstrip(".").strip()
    m = _UNIT_TAIL.match(s)
    if m:  # "72 clips", "5 cm" -> the number
        s = m.group(1)
    return s.replace(" ", "")


def _as_fraction(s):
    """Plain numbers, 1,000-style thousands, decimals, a/b and \\frac{a}{b}; None for anything else."""
    m = re.fullmatch(r"([-+]?)\\frac\{(\d+)\}\{(\d+)\}", s)
    if m:
        return (-1 if m.group(1) == "-" else 1) * Fraction(int(m.group(2)), int(m.group(3))) if int(m.group(3)) else None
    if not re.fullmatch(_NUMBER, s) or len(s) > 60:
        return None
    try:
        return Fraction(s.replace(",", ""))
    except (ValueError, ZeroDivisionError):
        return None


_TOWER = re.compile(r"\^\s*\{?[^{}]*\^|\^\s*\{?\s*\(?\s*\d{4,}|\d{4,}\s*!")


def _symbolic_equal(pred, gold):
    """math-verify on both sides, under its time limit; anything that could explode is refused first."""
    if len(pred) > 200 or _TOWER.search(pred) or _TOWER.search(gold):
        return False
    try:
        from math_verify import parse, verify
        g = parse(f"\\boxed{{{gold}}}", parsing_timeout=SYMBOLIC_TIMEOUT_S)
        p = parse(f"\\boxed{{{pred}}}", parsing_timeout=SYMBOLIC_TIMEOUT_S)
        return bool(g and p and verify(g, p, timeout_seconds=SYMBOLIC_TIMEOUT_S))
    except Exception:  # parse errors, timeouts, the signal limit outside the main thread: not equal
        return False


def _equal(pred, gold):
    a, b = normalize(pred), normalize(gold)
    if a == b:
        return True
    fa, fb = _as_fraction(a), _as_fraction(b)
    if fa is not None and fb is not None:
        return fa == fb
    return _symbolic_equal(a, b)


_DEGREE_PERCENT = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°|\\circ|\\deg|\\%|%")


def is_choice(gold):
    """A multiple-choice gold answer: one letter, optionally in parentheses."""
    return re.fullmatch(r"\(?[A-Za-z]\)?", gold.strip()) is not None


def _letter(pred):
    m = re.fullmatch(r"\(?([A-Za-z])[).:]?", normalize(pred))
    return m.group(1).upper() if m else None


def answers_match(pred, gold):
    """Equivalence of an extracted answer and the gold short answer (the whole rule of the spec)."""
    gold = str(gold)
    if is_choice(gold):
        return _letter(pred) == gold.strip("() ").upper()
    if _equal(pred, gold):
        return True
    stripped_pred, stripped_gold = _DEGREE_PERCENT.sub("", pred), _DEGREE_PERCENT.sub("", gold)
    if (stripped_pred, stripped_gold) != (pred, gold):
        return _equal(stripped_pred, stripped_gold)
    return False


def grade(response, gold):
    """1.0 if the last boxed answer of `response` matches `gold`, else 0.0."""
    pred = last_boxed(response)
    return float(pred is not None and answers_match(pred, gold))


# ---------------------------------------------------------------------------------------------------------
# routing: the rule grader, or an LLM judge for gold answers no rule can check

JUDGE_PROMPT = """You are grading an answer to a question against the reference answer.
Question:
{question}

Reference answer:
{gold}

Candidate's final answer:
{answer}

Decide whether the candidate's final answer is equivalent to the reference answer (same meaning and, for numbers and expressions, the same value; wording may differ). Reply with exactly one line of JSON and nothing else: {{"verdict": "correct"}} or {{"verdict": "wrong"}}"""


def parse_verdict(text):
    """1.0 for exactly {"verdict": "correct"}, 0.0 for anything else (a think block before it is allowed)."""
    text = re.sub(r"^\s*<think>.*?</think>", "", text, flags=re.DOTALL).strip()
    try:
        verdict = json.loads(text)
    except ValueError:
        return 0.0
    ok = isinstance(verdict, dict) and set(verdict) == {"verdict"} and verdict["verdict"] in ("correct", "wrong")
    return float(ok and verdict["verdict"] == "correct")


def rule_checkable(gold):
    """A letter, a number or a math expression; long words mean free-form prose, which goes to the judge."""
    plain = re.sub(r"\\[A-Za-z]+", " ", normalize(str(gold)))
    return is_choice(gold) or not re.search(r"[A-Za-z]{4,}", plain)


def route_of(example):
    route = example.get("route", "rule")
    return "judge" if route == "rule" and not rule_checkable(example["answer"]) else route


def judge_scores(judge, items):
    """items: (example, response) pairs -> 0/1 each, in one batch through the judge engine."""
    if not items:
        return []
    if judge is None:
        return [0.0] * len(items)  # no judge model: free-form answers cannot be checked
    prompts = [JUDGE_PROMPT.format(question=ex["question"], gold=ex["answer"],
                                   answer=last_boxed(r) or r[-2000:]) for ex, r in items]
    outs = judge.generate(prompts, n=1, max_new_tokens=512, temperature=0.0)
    return [parse_verdict(o[0].text) for o in outs]


def score_responses(pairs, judge=None, grade_fn=grade):
    """0/1 per (example, response): the rule grader where it applies, the judge (one batch) elsewhere."""
    scores = [grade_fn(text, ex["answer"]) if route_of(ex) != "judge" else None for ex, text in pairs]
    judged = iter(judge_scores(judge, [p for p, s in zip(pairs, scores) if s is None]))
    return [next(judged) if s is None else s for s in scores]


def score_nested(texts, examples, judge=None, grade_fn=grade):
    """texts[i] is a list of responses to examples[i]: the same nesting of 0/1 scores, one judge batch for all."""
    flat = iter(score_responses([(ex, t) for ts, ex in zip(texts, examples) for t in ts], judge, grade_fn))
    return [[next(flat) for _ in ts] for ts in texts]
