"""The binary reward: is the last \\boxed{} answer of a response equivalent to the gold answer?

Spec section "Reward". The rule grader (`grade`) checks short answers and letters; a gold answer no
rule can check (free-form prose) goes to an LLM judge (`score_responses` routes each pair). Training
rewards and eval.py's scores both go through `score_responses`.
Model output is untrusted: the scan is linear and bounded, over-long answers
are compared as text only, exponent towers and huge factorials never reach sympy (Python's big
integers would compute them in C where no time limit can interrupt), and math-verify runs under its
own time limit, within a time budget per answer (worst case under 2 s). Nothing is ever eval'd.
"""
import json
import re
import time
from fractions import Fraction

MAX_ANSWER_CHARS = 1_000  # a boxed answer longer than this is not an answer
MAX_BOXES_TRIED = 20  # unbalanced \boxed{ candidates examined from the end before giving up
SYMBOLIC_TIMEOUT_S = 1  # math-verify's own limit per parse / comparison (signal.alarm: whole seconds)
# no math-verify call starts once this much of one answer's grading went to math-verify: a response's worst
# case is then the budget plus one call's limit, about 1.5 s (a call is rarely more than milliseconds)
SYMBOLIC_BUDGET_S = 0.5


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
_BIG_INT = re.compile(r"\d{4,}")
_COMPUTED = re.compile(r"[*^!]|\\cdot|\\times")  # inside a factorial's operand: a product, power or factorial
_digit_factorial = re.compile(r"[({\[\s]*[0-7]\s*![)}\]\s]*").fullmatch  # one digit's factorial, bracketed or not
_OPEN, _CLOSE = "({[", ")}]"
_SCAN = 400  # characters examined around one ^ or ! (the scan stays linear in practice)


def _group_end(s, i, step):
    """The index just past the bracketed group that opens at s[i] (reading forward) or closes there (reading
    backward); any of (), {}, [] counts. An unbalanced group runs to the end of the scanned window."""
    opens, closes = (_OPEN, _CLOSE) if step == 1 else (_CLOSE, _OPEN)
    depth, j = 0, i
    while 0 <= j < len(s) and abs(j - i) < _SCAN:
        depth += (s[j] in opens) - (s[j] in closes)
        j += step
        if depth == 0:
            break
    return j


def _operand(s, i, step):
    """The text next to position i, reading forward (step 1: an exponent) or backward (step -1: what a
    factorial applies to): a bracketed group, a backslash command with its groups (forward), or one run
    of letters and digits, else the one character there."""
    while 0 <= i < len(s) and s[i] == " ":
        i += step
    j = i
    if 0 <= i < len(s) and s[i] in (_OPEN if step == 1 else _CLOSE):
        j = _group_end(s, i, step)
    elif step == 1 and s.startswith("\\", i):  # \frac{..}{..}, \sqrt{..}: the command and its arguments
        j = i + 1
        while j < len(s) and s[j].isalpha():
            j += 1
        while j < len(s) and s[j] in _OPEN and j - i < _SCAN:
            j = _group_end(s, j, 1)
    else:
        while 0 <= j < len(s) and abs(j - i) < _SCAN and s[j].isalnum():
            j += step
        if j == i and 0 <= i < len(s):  # another sign: itself (the first ! of 9!!)
            j += step
    return s[i:j] if step == 1 else s[j + 1:i + 1]


def _explosive(s):
    """Exponent towers ({9}^{{9}^{9}}, 2^{9!}), exponents or factorials of numbers of 4+ digits, factorials of
    factorials, powers or products ((99!)!, (999*999)!), binomials of big numbers: values sympy would build as
    exact big integers, in C where no time limit interrupts it, or only at the limit, with nothing gained.
    Every such answer is graded not equal without trying. The factorial of one digit up to 7 stays allowed
    inside a factorial or an exponent ((3!)! = 720, 2^{3!} = 64: at most 5040!, milliseconds)."""
    if _TOWER.search(s) or (("binom" in s or "choose" in s) and _BIG_INT.search(s)):
        return True
    for i, c in enumerate(s):
        if c == "^":
            exponent = _operand(s, i + 1, 1)
            if "^" in exponent or _BIG_INT.search(exponent) or "!" in exponent and not _digit_factorial(exponent):
                return True
        elif c == "!":
            operand = _operand(s, i - 1, -1)
            if (_COMPUTED.search(operand) and not _digit_factorial(operand)) or _BIG_INT.search(operand):
                return True
    return False


def _within(budget, fn, *args, **kwargs):
    """fn(*args, **kwargs), its time taken from budget[0] (seconds); not started once the budget is spent."""
    if budget[0] <= 0:
        raise TimeoutError("grading budget spent")
    start = time.monotonic()
    try:
        return fn(*args, **kwargs)
    finally:
        budget[0] -= time.monotonic() - start


def _symbolic_equal(pred, gold, budget):
    """math-verify on both sides, each call under its time limit and all of them within `budget` (a one-item
    list of seconds left for this answer); anything that could explode is refused first."""
    if len(pred) > 200 or _explosive(pred) or _explosive(gold):
        return False
    try:
        from math_verify import parse, verify
        g = _within(budget, parse, f"\\boxed{{{gold}}}", parsing_timeout=SYMBOLIC_TIMEOUT_S)
        p = _within(budget, parse, f"\\boxed{{{pred}}}", parsing_timeout=SYMBOLIC_TIMEOUT_S) if g else []
        # verify(g, p) is any() over the pairs of extractions, each under its own limit: one pair at a time,
        # so the budget also bounds the comparisons
        return any(_within(budget, verify, a, b, timeout_seconds=SYMBOLIC_TIMEOUT_S) for a in g for b in p)
    except Exception:  # parse errors, timeouts, the spent budget, the signal limit outside the main thread
        return False


def _equal(pred, gold, budget):
    a, b = normalize(pred), normalize(gold)
    if a == b:
        return True
    fa, fb = _as_fraction(a), _as_fraction(b)
    if fa is not None and fb is not None:
        return fa == fb
    return _symbolic_equal(a, b, budget)


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
    budget = [SYMBOLIC_BUDGET_S]  # shared by the first try and the °/% retry
    if _equal(pred, gold, budget):
        return True
    stripped_pred, stripped_gold = _DEGREE_PERCENT.sub("", pred), _DEGREE_PERCENT.sub("", gold)
    if (stripped_pred, stripped_gold) != (pred, gold):
        return _equal(stripped_pred, stripped_gold, budget)
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
