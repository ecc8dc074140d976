"""The binary reward: is the last \\boxed{} answer of a response equivalent to the gold answer?

Spec section "Reward" and docs/EVAL.md "Exact+Judge". The rule grader (`grade`) checks short answers and
letters in the response's final answer, the part after its reasoning (`final_part`: a box written only
inside <think> is no final answer); every row it cannot resolve (a free-form gold answer, no parseable box
in the final answer, a truncated response) goes to the LLM judge with the paper's prompt and the full
response, the only reader that may look inside the reasoning; without a judge such rows score 0 and are
reported as unresolved. Training rewards (`score_rollouts`) and eval.py's scores both go through
`score_detailed` with truncation marked, so the routing is the same in both.
Model output is untrusted: the scan is linear and bounded, over-long answers
are compared as text only, exponent towers and huge factorials never reach sympy (Python's big
integers would compute them in C where no time limit can interrupt), and math-verify runs under its
own time limit, within a time budget per answer (worst case under 2 s). Nothing is ever eval'd.
"""
import json
import re
import time
from fractions import Fraction

import jinja2

# a boxed answer longer than this is compared as text only (never parsed as a number or by math-verify); the
# graders still read it whole (OCR pages, tables and documents are answers of thousands of characters), while
# last_boxed's other callers (the NCQ prompt's wrong answers) skip it by default
MAX_ANSWER_CHARS = 1_000
MAX_BOXES_TRIED = 20  # unbalanced \boxed{ candidates examined from the end before giving up
SYMBOLIC_TIMEOUT_S = 1  # math-verify's own limit per parse / comparison (signal.alarm: whole seconds)
# no math-verify call starts once this much of one answer's grading went to math-verify: a response's worst
# case is then the budget plus one call's limit, about 1.5 s (a call is rarely more than milliseconds)
SYMBOLIC_BUDGET_S = 0.5


def last_boxed(text, max_chars=MAX_ANSWER_CHARS):
    """Content of the last \\boxed{...} with balanced braces, or None; a box longer than `max_chars` is
    skipped for the one before it (None: any length; each candidate's scan is linear, and at most
    MAX_BOXES_TRIED candidates are tried). The graders read any length (final_boxed)."""
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
            limit = len(text) if max_chars is None else min(len(text), i + max_chars + 2)
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
# a comma inside a number only as a thousands separator (1,000 and 12,345,678): "5,6" is a list of two numbers
# (VLMs-are-Blind's grid answers), never 56; a decimal exponent (1e-5, 2.5E3, -3e+2) as the number it is
_NUMBER = r"[-+]?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?(?:/\d+)?"
# a larger decimal exponent is no answer: 1e999999999 would be built as a billion-digit integer, in C, where
# no time limit stops it
MAX_EXPONENT = 1000
_EXPONENT = re.compile(r"\d\.?[eE][-+]?(\d+)")
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


def _huge_exponent(s):
    """Whether s writes a number with a decimal exponent beyond MAX_EXPONENT (1e999999999)."""
    return any(len(e.lstrip("0")) > 4 or int(e) > MAX_EXPONENT for e in _EXPONENT.findall(s))


def _as_fraction(s):
    """Plain numbers, 1,000-style thousands, decimals, exponents (1e-5, 2.5E3; |exponent| up to
    MAX_EXPONENT), a/b and \\frac{a}{b}; None for anything else."""
    m = re.fullmatch(r"([-+]?)\\frac\{(\d+)\}\{(\d+)\}", s)
    if m:
        sign, num, den = -1 if m.group(1) == "-" else 1, int(m.group(2)), int(m.group(3))
        return sign * Fraction(num, den) if den else None
    if not re.fullmatch(_NUMBER, s) or len(s) > 60 or _huge_exponent(s):
        return None
    try:
        return Fraction(s.replace(",", ""))
    except (ValueError, ZeroDivisionError):
        return None


_TOWER = re.compile(r"\^\s*\{?[^{}]*\^|\^\s*\{?\s*\(?\s*\d{4,}|\d{4,}\s*!")
_BIG_INT = re.compile(r"\d{4,}")
_COMPUTED = re.compile(r"[*^!]|\\cdot|\\times")  # inside a factorial's operand: a product, power or factorial
# one digit's factorial, bracketed or not
_digit_factorial = re.compile(r"[({\[\s]*[0-7]\s*![)}\]\s]*").fullmatch
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
    if _TOWER.search(s) or (("binom" in s or "choose" in s) and _BIG_INT.search(s)) or _huge_exponent(s):
        return True
    for i, c in enumerate(s):
        if c == "^":
            exponent = _operand(s, i + 1, 1)
            if "^" in exponent or _BIG_INT.search(exponent) or \
                    "!" in exponent and not _digit_factorial(exponent):
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


_WARMED = []


def _math_verify():
    """math-verify's parse and verify, warmed up once: the first call builds the LaTeX grammar and sympy's
    caches (about a second, more on a busy machine), a cost of the process, not of the answer being graded,
    so it must not eat that answer's budget."""
    from math_verify import parse, verify

    if not _WARMED:
        _WARMED.append(verify(parse("\\boxed{(x+1)^2}"), parse("\\boxed{x^2+2x+1}")))
    return parse, verify


def _symbolic_equal(pred, gold, budget):
    """math-verify on both sides, each call under its time limit and all of them within `budget` (a one-item
    list of seconds left for this answer); anything that could explode is refused first."""
    if len(pred) > 200 or _explosive(pred) or _explosive(gold):
        return False
    try:
        parse, verify = _math_verify()
        g = _within(budget, parse, f"\\boxed{{{gold}}}", parsing_timeout=SYMBOLIC_TIMEOUT_S)
        p = _within(budget, parse, f"\\boxed{{{pred}}}", parsing_timeout=SYMBOLIC_TIMEOUT_S) if g else []
        # verify(g, p) is any() over the pairs of extractions, each under its own limit: one pair at a time,
        # so the budget also bounds the comparisons
        return any(_within(budget, verify, a, b, timeout_seconds=SYMBOLIC_TIMEOUT_S) for a in g for b in p)
    except Exception:  # noqa: BLE001 (parse errors, timeouts, the spent budget, the signal limit off the main thread)
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
    if len(pred) > MAX_ANSWER_CHARS:  # a page of text: compared as text, never parsed as mathematics
        return normalize(pred) == normalize(gold)
    budget = [SYMBOLIC_BUDGET_S]  # shared by the first try and the °/% retry
    if _equal(pred, gold, budget):
        return True
    stripped_pred, stripped_gold = _DEGREE_PERCENT.sub("", pred), _DEGREE_PERCENT.sub("", gold)
    if (stripped_pred, stripped_gold) != (pred, gold):
        return _equal(stripped_pred, stripped_gold, budget)
    return False


def final_part(text):
    """Where a response's final answer is: the text after its last </think>; nothing when a <think> block
    opened and never closed (the reasoning was cut: no final answer was written); the whole text when there
    is no think tag. Only the judge looks inside the reasoning (docs/EVAL.md), so the rule grader and the
    benchmarks' deterministic parsers read this part alone."""
    if "</think>" in text:
        return text.rsplit("</think>", 1)[1]
    return "" if "<think>" in text else text


def final_boxed(text):
    """The last \\boxed{} of the final answer, whatever its length (a box inside the reasoning does not
    count), or None."""
    return last_boxed(final_part(text), max_chars=None)


def as_number(text):
    """A boxed answer as an exact number (Fraction) when it is one (plain, 1,000-style, decimal, 1e-5-style,
    a/b, \\frac{a}{b}, a unit after it), else None."""
    return _as_fraction(normalize(text))


def grade(response, gold):
    """1.0 if the last boxed answer of `response`'s final answer (after its reasoning) matches `gold`, else
    0.0."""
    pred = final_boxed(response)
    return float(pred is not None and answers_match(pred, gold))


# ---------------------------------------------------------------------------------------------------------
# routing (Exact+Judge): the rule grader first, the judge for every row the rule cannot resolve

# The paper's shared judge prompt (Fig. 9; docs/EVAL.md), verbatim: a Jinja2 template, `options` rendered only
# when the benchmark has answer options. Its long lines are kept as the paper prints them.
JUDGE_PROMPT = r"""You are an expert judge evaluating whether a model's response is correct according to the ground truth.
## Your Role (READ FIRST)
You are a COMPARATOR, not a solver. Your ONLY job is to decide how well the model's response matches the provided GROUND TRUTH.
• Do NOT attempt to solve the problem yourself.
• Do NOT infer or derive what the "real" answer should be.
• Do NOT second-guess the ground truth, even if it seems wrong.
• The "Model Response" section below MAY be either (a) the model's full trajectory including any <think>...</think> reasoning and a concluding \boxed{...} answer, OR (b) a short EXTRACTED snippet that was already pulled out as the candidate final answer (e.g. a bare letter like B, a number like 42, an expression like x = 5/3). Treat both forms uniformly: the snippet (when given) IS the model's committed final answer, and a full trajectory's final answer is the content inside the last \boxed{...} or the concluding sentence AFTER any </think> tag.
• If the final answer is missing due to answer format error, truncation, or other reasons, look inside thinking or reasoning.
• You should OUTPUT JSON with the format {"verdict": "correct" or "wrong"} based on the model's response and the ground truth.
## Question
{{ question }}
{% if options %}## Answer Options
{{ options }}
{% endif %}## Model Response
{{ model_response }}
## Ground Truth Answer
{{ ground_truth }}
Output ONLY a valid JSON object with exactly this format (no prose, no code fences, no trailing commentary): {"verdict": "correct" or "wrong"}"""  # noqa: E501 (the paper's text, verbatim)
_JUDGE_TEMPLATE = jinja2.Template(JUDGE_PROMPT)  # no autoescape: the texts are not HTML
JUDGE_MAX_NEW_TOKENS = 512
# Greedy, as the paper's judge (temperature 0, top-p 1); every field set so no engine default applies.
JUDGE_SAMPLING = dict(temperature=0.0, top_p=1.0, top_k=0, presence_penalty=0.0)
# The judge reads the full response, but a prompt must stay bounded: a longer response loses its START (the
# answer is at the end), and the cut is marked. 50,000 characters is about 12,500 tokens of English, so a
# response within the paper's 12,288-token cap nearly always reaches the judge whole.
JUDGE_MAX_RESPONSE_CHARS = 50_000


def clip_start(text, budget=JUDGE_MAX_RESPONSE_CHARS):
    """`text` if it fits `budget` characters, else its last `budget` characters after a marker naming the
    cut."""
    if len(text) <= budget:
        return text
    cut = len(text) - budget
    return f"[... the first {cut} characters of the response are cut here ...]\n" + text[cut:]


def judge_prompt(example, response):
    """The paper's judge prompt for one response: the question without its options, the options (if any),
    the full response (clipped from the start), the gold answer."""
    return _JUDGE_TEMPLATE.render(
        question=example.get("stem", example["question"]), options=example.get("options") or "",
        model_response=clip_start(response), ground_truth=example["answer"])


def after_thinking(text):
    """The reply after the last </think>, stripped; the whole text when there is none. A reasoning model's
    thinking ends at its last </think> wherever the block opened: at the start of the reply, after some text,
    or in the prompt (a chat template may open <think> in the generation prompt, so the reply has no opening
    tag). Judges' verdicts, the Hint baseline's hints and MultiChallenge's graded reply all read this part."""
    return text.rsplit("</think>", 1)[-1].strip()


def verdict_of(text):
    """"correct" or "wrong" for exactly {"verdict": "correct"|"wrong"}, None for anything else. A think block
    before it is allowed (a thinking judge writes one, with or without its opening tag); a verdict written
    only inside the thinking does not count. Never raises: any reply is a verdict or None."""
    if not isinstance(text, str):
        return None
    text = after_thinking(text)
    try:
        verdict = json.loads(text)
    except (ValueError, RecursionError):  # not JSON, or nested too deep to parse
        return None
    if isinstance(verdict, dict) and set(verdict) == {"verdict"}:
        return verdict["verdict"] if verdict["verdict"] in ("correct", "wrong") else None
    return None


def parse_verdict(text):
    """1.0 for exactly {"verdict": "correct"}, 0.0 for anything else (malformed counts as wrong, as in the
    paper)."""
    return float(verdict_of(text) == "correct")


def rule_checkable(gold):
    """A letter, a number or a math expression; long words mean free-form prose, which goes to the judge."""
    plain = re.sub(r"\\[A-Za-z]+", " ", normalize(str(gold)))
    return is_choice(gold) or not re.search(r"[A-Za-z]{4,}", plain)


def route_of(example):
    """"judge" for a free-form gold answer (or a benchmark that always judges), else the example's route."""
    route = example.get("route", "rule")
    return "judge" if route == "rule" and not rule_checkable(example["answer"]) else route


def rule_verdict(response, gold, truncated=False):
    """1.0 or 0.0 where the rule grader can decide, None where it cannot and the judge must (Exact+Judge):
    no parseable box (none, empty, or no letter for a multiple-choice gold), or a truncated response whose
    last box is wrong (the final answer was never written; that box is an intermediate one). A box that
    matches is trusted even in a truncated response (the grader audit: no false positives). Only the final
    answer counts: a box written inside the reasoning alone leaves the row to the judge."""
    if grade(response, gold):  # the module's grade, looked up at the call (tests patch reward.grade)
        return 1.0
    pred = final_boxed(response)
    if pred is None or not pred.strip() or (is_choice(str(gold)) and _letter(pred) is None) or truncated:
        return None
    return 0.0


def judge_verdicts(judge, items):
    """items: (example, response) pairs -> (0/1, the judge's raw reply or None) each, in one judge batch.
    A request that failed for good (a remote judge returns no rollout) scores 0 with reply None."""
    if not items:
        return []
    prompts = [judge_prompt(ex, r) for ex, r in items]
    outs = judge.generate(prompts, n=1, max_new_tokens=JUDGE_MAX_NEW_TOKENS, **JUDGE_SAMPLING)
    return [(parse_verdict(o[0].text), o[0].text) if o else (0.0, None) for o in outs]


def score_detailed(pairs, judge=None, truncated=None):
    """Per (example, response) a dict: score (0/1), via ("rule", "judge", or "unresolved": the rule could not
    decide and there is no judge, scored 0) and, for judged ones, the judge's raw reply. `truncated` (one bool
    per pair; default none truncated) marks responses cut by the token limit. One judge batch for all."""
    truncated = truncated or [False] * len(pairs)
    scores = [None if route_of(ex) == "judge" else rule_verdict(text, ex["answer"], cut)
              for (ex, text), cut in zip(pairs, truncated)]
    pending = [p for p, s in zip(pairs, scores) if s is None]
    judged = iter(judge_verdicts(judge, pending) if judge is not None else [])
    out = []
    for s in scores:
        if s is not None:
            out.append({"score": s, "via": "rule"})
        elif judge is None:
            out.append({"score": 0.0, "via": "unresolved"})
        else:
            score, reply = next(judged)
            out.append({"score": score, "via": "judge", "judge_reply": reply})
    return out


def score_responses(pairs, judge=None, truncated=None):
    """0/1 per (example, response): the rule grader where it decides, the judge (one batch) for the rest."""
    return [d["score"] for d in score_detailed(pairs, judge, truncated)]


def score_rollouts(groups, examples, judge=None):
    """score_nested of rollouts (groups[i]: objects with .text and .finish_reason, responses to examples[i]):
    a response the token limit cut (finish_reason "length") is marked truncated, as eval.py marks it, so a
    training reward and a benchmark score route the same response the same way (App. D.1: one routing for
    every method)."""
    return score_nested([[r.text for r in g] for g in groups], examples, judge,
                        [[r.finish_reason == "length" for r in g] for g in groups])


def score_nested(texts, examples, judge=None, truncated=None):
    """texts[i] is a list of responses to examples[i]: the same nesting of 0/1 scores, one judge batch for
    all. `truncated`, if given, has the nesting of `texts`."""
    flat_cut = [c for cs in truncated for c in cs] if truncated is not None else None
    flat = iter(score_responses([(ex, t) for ts, ex in zip(texts, examples) for t in ts], judge, flat_cut))
    return [[next(flat) for _ in ts] for ts in texts]
