"""Reformulated prompts (BCQ, NCQ), candidate compression, and which hard questions get them.

The teacher reaches the student only through these strings: BCQ shows one correct teacher answer and
one wrong student answer without saying which is which; NCQ shows the student's own wrong attempts,
labelled wrong. Prompt strings are the paper's, as docs/ZPPO.md gives them; spec steps 4-6. The Hint and
Prefix baselines' groups, of the same shape as `bcq_ncq_groups`', are baselines.py's.
"""
import re

from reward import last_boxed
from zppo import Group

CLOSER = (
    "You FIRST think about the reasoning process as an internal monologue and then provide the final "
    "answer. The reasoning process MUST BE enclosed within <think> </think> tags. The final answer MUST "
    "BE put in \\boxed{}."
)

BCQ_INSTRUCTION = (
    "Here are two candidate responses in <candidate> </candidate> tags to the question above. One is "
    "correct and another is wrong. Use these as references to help you solve the problem."
)

NCQ_WRONG = "The following answers are all WRONG: {answers}. "
NCQ_INSTRUCTION = "Below are the incorrect reasoning processes in <candidate> </candidate> tags."

COMPRESSION_TEMPLATE = """Compress the response below into a summary (in 5 lines max). Rules:
• Response is in <response>...</response> tags
• Summary should be in <summary>...</summary> tags and should be in 5 lines max
• Keep ONLY the essential reasoning steps and the final answer
• Remove ALL exploratory text, self-corrections, retries, and filler
• Do NOT re-derive or add new information
• End with the final answer in \\boxed{{}} format
<response>
{response}
</response>"""


def with_closer(text):
    """The answer-format closer goes after the user text of every student, teacher and eval prompt."""
    return f"{text} {CLOSER}"


def user_prompt(example, text):
    """The engine prompt of `text` about `example`: with the question's images (and a video benchmark's clips)
    first when it has any (plain, BCQ, NCQ and teacher prompts alike; candidates stay text)."""
    if example.get("videos"):
        return {"text": text, "images": example.get("images") or [], "videos": example["videos"]}
    return {"text": text, "images": example["images"]} if example.get("images") else text


def plain_prompt(example):
    """The plain prompt of a question, as the student, the teacher and the benchmarks get it: its images (if
    any), the question, the closer."""
    return user_prompt(example, with_closer(example["question"]))


def group_prompt(group):
    """The engine prompt of a group (zppo.Group): its question's images, the group's text, the closer."""
    return user_prompt(group.question, with_closer(group.text))


def _candidates(texts):
    return "".join(f"\n<candidate>\n{t}\n</candidate>" for t in texts)


def bcq_prompt(question, candidates):
    """Binary-choice question: exactly two candidates, already shuffled, no labels."""
    if len(candidates) != 2:
        raise ValueError(f"BCQ takes exactly two candidates, got {len(candidates)}")
    return f"{question}\n\n{BCQ_INSTRUCTION}{_candidates(candidates)}"


def ncq_prompt(question, wrong_answers, candidates):
    """Negative-candidate question: every wrong rollout as a candidate, their final answers listed as WRONG.

    When no wrong rollout has a parseable boxed answer the WRONG sentence would list nothing, so it is
    left out and the prompt starts with the candidate instruction [our default].
    """
    boxed = ", ".join(f"\\boxed{{{a}}}" for a in wrong_answers)
    wrong = NCQ_WRONG.format(answers=boxed) if wrong_answers else ""
    return f"{question}\n\n{wrong}{NCQ_INSTRUCTION}{_candidates(candidates)}"


def compression_prompt(response):
    return COMPRESSION_TEMPLATE.format(response=response)


_SUMMARY = re.compile(r"<summary>(.*?)</summary>", re.DOTALL)


def extract_summary(text):
    """Text inside the last complete <summary>...</summary>; the raw output if there is none [our default]."""
    found = _SUMMARY.findall(text)
    return found[-1].strip() if found else text.strip()


def dedup(answers):
    """Distinct answers in first-seen order, ignoring surrounding whitespace; None (no answer) dropped."""
    seen = []
    for a in answers:
        if a is not None and a.strip() and a.strip() not in seen:
            seen.append(a.strip())
    return seen


def precap(accuracies, hard, cap, rng):
    """Spec step 4: hard question indices sorted hardest first (random tie-break), the first `cap` kept."""
    order = list(hard)
    rng.shuffle(order)  # shuffle, then a stable sort: ties end up in random order
    order.sort(key=lambda i: accuracies[i])
    return order[:cap]


def postcap(kept, teacher_ok, cap, bcq=True, ncq=True):
    """Spec step 6: walk the kept questions hardest first, adding BCQ (only with a correct teacher
    rollout) then NCQ, and stop once `cap` instances are chosen. Returns [(index, "bcq"|"ncq"), ...]."""
    chosen = []
    for i in kept:
        for kind, wanted in (("bcq", bcq and teacher_ok.get(i, False)), ("ncq", ncq)):
            if wanted and len(chosen) < cap:
                chosen.append((i, kind))
    return chosen


def pick_bcq_pair(teacher_correct, student_wrong, rng):
    """One correct teacher rollout and one wrong student rollout, each uniformly at random, in random
    order."""
    pair = [rng.choice(teacher_correct), rng.choice(student_wrong)]
    rng.shuffle(pair)
    return pair


def compress_candidates(texts, teacher, max_chars=None, **sampling):
    """Candidate compression: the teacher rewrites every candidate into a short trace, so length and style do
    not tell which BCQ candidate is the teacher's. Returns {original: rewritten}. Without a teacher (or
    with compression off) candidates stay as written, cut to `max_chars` when given. `sampling`: the
    teacher's generate arguments (max_new_tokens, temperature, ...)."""
    unique = list(dict.fromkeys(texts))
    if teacher is None or not unique:
        return {t: t[:max_chars] for t in unique}  # [:None] keeps all
    outs = teacher.generate([compression_prompt(t) for t in unique], n=1, **sampling)
    # a failed remote compression leaves that candidate as written (truncated if asked)
    return {t: extract_summary(o[0].text) if o else t[:max_chars] for t, o in zip(unique, outs)}


def reformulated_prompts(chosen, questions, wrong, teacher_correct, rng, compressor=None, max_chars=None,
                         **sampling):
    """Spec step 5: the prompt of each chosen (question index, "bcq" | "ncq"). BCQ: one correct teacher
    rollout (teacher_correct[i]) and one wrong student rollout (wrong[i]), shuffled; NCQ: every wrong
    rollout, their boxed answers listed as WRONG. Candidates are compressed by `compressor` (the teacher)."""
    raw = [pick_bcq_pair(teacher_correct[i], wrong[i], rng) if kind == "bcq" else wrong[i]
           for i, kind in chosen]
    short = compress_candidates([c for cands in raw for c in cands], compressor, max_chars, **sampling)
    prompts = []
    for (i, kind), cands in zip(chosen, raw):
        cands = [short[c] for c in cands]
        if kind == "bcq":
            prompts.append(bcq_prompt(questions[i], cands))
        else:
            prompts.append(ncq_prompt(questions[i], dedup(last_boxed(w) for w in wrong[i]), cands))
    return prompts


def bcq_ncq_groups(plain, kept, correct, rng, cap, bcq, ncq, compressor=None, max_chars=None, **sampling):
    """ZPPO's groups, spec steps 5-6: post-cap (BCQ only with a correct teacher rollout, then NCQ, at most
    `cap`), then each chosen question's prompt from its wrong plain rollouts and correct teacher rollouts
    (correct[i])."""
    chosen = postcap(kept, {i: bool(correct.get(i)) for i in kept}, cap, bcq, ncq)
    wrong = {i: [r.text for r, x in zip(plain[i].rollouts, plain[i].rewards) if x == 0] for i, _ in chosen}
    correct_texts = {i: [r.text for r in rs] for i, rs in correct.items()}
    texts = reformulated_prompts(chosen, [g.text for g in plain], wrong, correct_texts, rng, compressor,
                                 max_chars, **sampling)
    return [Group(plain[i].question, kind, text) for (i, kind), text in zip(chosen, texts)]
