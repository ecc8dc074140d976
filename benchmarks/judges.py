"""The BenchJudge protocol (docs/EVAL.md): a benchmark's own judge prompt sent to the judge model with
the paper's judge decoding, its reply parsed by the benchmark's parser, re-asked where the upstream evaluator
re-asks (MM-Vet), and every reply that parses nowhere counted. The prompts and parsers themselves live in
each benchmark's module; score.BENCH_JUDGES names them per route."""
import json
import re

from reward import JUDGE_MAX_NEW_TOKENS, JUDGE_SAMPLING, after_thinking


def bench_judge_scores(judge, items, spec):
    """(example, Rollout) items -> per item a dict: score, via ("judge" or "unresolved"), the judge's last
    reply, whether it was malformed (no parse after every retry: scores 0), whether the call failed for good
    (no reply: scores 0, counted apart) and how many times it was re-asked. One judge batch per attempt.

    `spec`: {"prompt": (example, response) -> prompt, "parse": (reply, example) -> {"score", ...} or None,
    and optionally "retry": (example, response, attempt) -> (prompt, temperature) with "retries": N, the
    upstream evaluator's re-asks of a reply it cannot read}."""
    if not items:
        return []
    if judge is None:
        return [{"score": 0.0, "via": "unresolved"} for _ in items]
    replies = _ask(judge, [spec["prompt"](ex, r.text) for ex, r in items], JUDGE_SAMPLING["temperature"])
    parsed = [spec["parse"](reply, ex) if reply is not None else None
              for (ex, _), reply in zip(items, replies)]
    retried = [0] * len(items)
    for attempt in range(1, spec.get("retries", 0) + 1):
        # only a reply that came but did not parse is re-asked (a failed call was already retried by the
        # engine, --judge-retries)
        again = [i for i, (reply, got) in enumerate(zip(replies, parsed))
                 if reply is not None and got is None]
        if not again:
            break
        asks = [spec["retry"](items[i][0], items[i][1].text, attempt) for i in again]
        for i, reply in zip(again, _ask_each(judge, asks)):
            retried[i] += 1
            if reply is not None:
                replies[i], parsed[i] = reply, spec["parse"](reply, items[i][0])
    results = []
    for reply, got, n in zip(replies, parsed, retried):
        results.append({"score": got["score"] if got else 0.0, "via": "judge", "judge_reply": reply,
                        "malformed": got is None and reply is not None, "judge_failed": reply is None,
                        "judge_retries": n, **({"judge": got} if got else {})})
    return results


def _ask(judge, prompts, temperature):
    """One judge batch, the paper's judge decoding at `temperature`; None for a call that failed for good (a
    remote judge returns no rollout)."""
    outs = judge.generate(prompts, n=1, max_new_tokens=JUDGE_MAX_NEW_TOKENS,
                          **dict(JUDGE_SAMPLING, temperature=temperature))
    return [out[0].text if out else None for out in outs]


def _ask_each(judge, asks):
    """(prompt, temperature) pairs -> replies, one batch per temperature, in order."""
    replies = [None] * len(asks)
    for temperature in sorted({t for _, t in asks}):
        mine = [i for i, (_, t) in enumerate(asks) if t == temperature]
        for i, reply in zip(mine, _ask(judge, [asks[i][0] for i in mine], temperature)):
            replies[i] = reply
    return replies


# ---------------------------------------------------------------------------------------------------------
# reading a judge's JSON


def json_object(reply):
    """The JSON object of a reply after its thinking (a ```json fence around it allowed), else None."""
    text = after_thinking(reply)
    fenced = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", text, re.DOTALL)
    try:
        obj = json.loads(fenced.group(1) if fenced else text)
    except (ValueError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None


_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|//[^\n]*|\b(?:True|False)\b|[^"/TF]+|.', re.DOTALL)


def loose_json_object(reply):
    """json_object, also for the object a judge writes when its instruction shows a commented template
    (MMVU's `"correct": // boolean value, True if ...`): `//` comments outside strings dropped and Python's
    True / False read as JSON's true / false. Strings are left as they are."""
    obj = json_object(reply)
    if obj is not None:
        return obj
    text = after_thinking(reply)
    fenced = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", text, re.DOTALL)
    text = fenced.group(1) if fenced else text
    out = []
    for token in _TOKEN.findall(text):
        if token.startswith("//"):
            continue
        out.append({"True": "true", "False": "false"}.get(token, token))
    try:
        obj = json.loads("".join(out))
    except (ValueError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None
