"""The paper's five video benchmarks (its Table 7): their row converters, MMVU's BenchJudge (yale-nlp/MMVU
utils/eval_utils.py, texts verbatim in prompts.py), and the deterministic parsers of MVBench and Video-MME,
the first step of their Rule+Judge (docs/EVAL.md), as lmms-eval's task utilities read an answer. A converter
names the row's video (`video_file`); video.py finds the file and samples its frames."""
import re
from collections import defaultdict

from benchmarks.judges import loose_json_object
from benchmarks.prompts import MMVU_MULTI_CHOICE_INSTRUCTION, MMVU_OPEN_ENDED_INSTRUCTION
from benchmarks.vlm import by_sample
from data import answer_text
from reward import clip_start

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def choice_fields(question, options, gold_letter):
    """A lettered multiple-choice question (load.py renders the options "A. ...") with its gold letter."""
    return {"question": question, "choices": [str(o) for o in options],
            "letter_index": LETTERS.index(gold_letter)}


# ---------------------------------------------------------------------------------------------------------
# MMVU (yale-nlp/MMVU, validation): BenchJudge


def convert_mmvu(row, spec, where):
    """question_type multiple-choice (choices a dict A-E, answer a letter) or open-ended."""
    out = {"video_file": row["video"], "route": "mmvu", "question_type": str(row["question_type"]),
           "stem": str(row["question"])}
    if row["question_type"] == "multiple-choice":
        choices = {k: v for k, v in (row.get("choices") or {}).items() if v not in (None, "")}
        gold = str(row["answer"]).strip()
        if gold not in choices:
            return "answer_format"
        out["choice_map"] = choices
        out.update(choice_fields(str(row["question"]), [choices[k] for k in sorted(choices)], gold))
        out["answer_text"] = gold
        return out
    return {**out, "question": str(row["question"]), "answer": str(row["answer"])}


def mmvu_prompt(example, response):
    """prepare_evaluation_message: the instruction of the question type as the system message; question (with
    "A: ..." options), ground truth and the model's response as the user one."""
    if example["question_type"] == "multiple-choice":
        options = "\n".join(f"{k}: {v}" for k, v in example["choice_map"].items())
        context, system = f"Question: {example['stem']}\n\nOptions:\n{options}", MMVU_MULTI_CHOICE_INSTRUCTION
    else:
        context, system = f"Question: {example['stem']}", MMVU_OPEN_ENDED_INSTRUCTION
    user = f"{context}\n\nGround Truth Answer: {example.get('answer_text', example['answer'])}\n\n" \
           f"Model Response to the Question: {clip_start(response)}"
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def parse_mmvu(reply, example):
    """Upstream asks OpenAI for structured output (a pydantic EvaluationOutput: extracted_answer str, correct
    bool), so its reply always parses; a local judge has no schema and follows the instruction's
    commented template, writing `True` or a `// comment`: those are read (judges.loose_json_object), and
    `correct` may be a JSON or Python boolean or the text "true"/"false". Anything else scores 0 and is
    counted as malformed, as upstream's except branch scores a reply it cannot read (it re-asks only failed
    requests)."""
    obj = loose_json_object(reply)
    if obj is None or "extracted_answer" not in obj:
        return None
    correct = obj.get("correct")
    if isinstance(correct, str) and correct.strip().lower() in ("true", "false"):
        correct = correct.strip().lower() == "true"
    if not isinstance(correct, bool):
        return None
    return {"score": float(correct), "extracted": str(obj["extracted_answer"])}


# ---------------------------------------------------------------------------------------------------------
# MVBench (OpenGVLab/MVBench, 20 task configs): Rule+Judge

# MVBench's videos live in per-source folders (as the set's "video" revision and lmms-eval's task lay them
# out)
MVBENCH_FOLDERS = {
    "object_interaction": "star/Charades_segment", "action_sequence": "star/Charades_segment",
    "action_prediction": "star/Charades_segment", "action_localization": "sta/sta_video_segment",
    "moving_count": "clevrer/video_validation", "fine_grained_pose": "nturgbd_convert",
    "character_order": "perception/videos", "object_shuffle": "perception/videos",
    "egocentric_navigation": "vlnqa", "moving_direction": "clevrer/video_validation",
    "episodic_reasoning": "tvqa/video_fps3_hq_segment", "fine_grained_action": "Moments_in_Time_Raw/videos",
    "scene_transition": "scene_qa/video", "state_change": "perception/videos",
    "moving_attribute": "clevrer/video_validation", "action_antonym": "ssv2_video_mp4",
    "unexpected_action": "FunQA_test/test", "counterfactual_inference": "clevrer/video_validation",
    "object_existence": "clevrer/video_validation", "action_count": "perception/videos",
}
MVBENCH_CONFIGS = sorted(MVBENCH_FOLDERS)


def convert_mvbench(row, spec, where):
    candidates = [str(c) for c in row["candidates"]]
    if str(row["answer"]) not in candidates:
        return "answer_format"
    folder = MVBENCH_FOLDERS.get(str(row.get("config") or ""), "")
    video = row["video"] if not folder else f"{folder}/{row['video']}"
    return {"video_file": video, "route": "mvbench",
            **choice_fields(str(row["question"]), candidates, LETTERS[candidates.index(str(row["answer"]))])}


_PUNCT = [";", r"/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",",
          "?", "!"]


def mvbench_letter(answer):
    """lmms-eval mvbench utils `mcq_acc`'s `process`: "B. text" gives B; else the text with upstream's
    punctuation handling, lower-cased, and its first standalone letter A-E (an article "a" reads as A:
    upstream's, kept). None where there is no letter (upstream then compares the text with the gold letter
    and scores 0; here the judge reads it)."""
    found = re.match(r"^([A-E])\.\s*(.+)$", answer.strip(), re.IGNORECASE)
    if found:
        return found.group(1).upper()
    text = answer.replace("\n", " ").replace("\t", " ").strip()
    comma_number = re.search(r"(\d)(,)(\d)", text) is not None
    out = text
    for p in _PUNCT:  # processPunctuation: dropped where spaced (or a 1,000 number is there), else a space
        out = out.replace(p, "" if (p + " " in text or " " + p in text or comma_number) else " ")
    out = re.sub(r"(?!<=\d)(\.)(?!\d)", "", out, count=32)  # upstream passes re.UNICODE (32) as the count
    out = out.strip("'").strip('"').strip(")").strip("(").strip().lower()
    found = re.search(r"\b([A-E])\b", out, re.IGNORECASE)
    return found.group(1).upper() if found else None


def mvbench_verdict(box, example):
    letter = mvbench_letter(box)
    return None if letter is None else float(letter == example["answer"])


def mvbench_headline(examples, records, samples):
    """MVBench's own number: the mean of its 20 tasks' accuracies (each task 200 questions, so equal to the
    mean over questions on the whole set)."""
    task = {ex["id"]: ex["meta"].get("config") for ex in examples}
    means = []
    for scores in by_sample(records, samples):
        per = defaultdict(list)
        for i, s in scores.items():
            per[task[i]].append(s)
        means.append(sum(sum(v) / len(v) for v in per.values()) / len(per))
    return {"task_mean": sum(means) / len(means)}


# ---------------------------------------------------------------------------------------------------------
# Video-MME (lmms-lab/Video-MME), without and with subtitles: Rule+Judge

# lmms-eval videomme utils `extract_characters_regex`'s prefixes, as its list has them: two pairs lack the
# comma between them, so "The best option is" and "Best answer:" are never removed alone (upstream's, kept)
_VIDEOMME_PREFIXES = ["The best answer is", "The correct answer is", "The answer is", "The answer",
                      "The best option isThe correct option is", "Best answer:Best option:"]


def convert_videomme(row, spec, where):
    options = [re.sub(r"^\s*[A-Z]\.\s*", "", str(o)) for o in row["options"]]  # the set writes "A. ..."
    gold = str(row["answer"]).strip()
    if not re.fullmatch(r"[A-Z]", gold) or LETTERS.index(gold) >= len(options):
        return "answer_format"
    out = {"video_file": f"{row['videoID']}.mp4", "route": "videomme",
           **choice_fields(str(row["question"]), options, gold)}
    return {**out, "subtitle_file": f"{row['videoID']}.srt"} if spec.get("subtitles") else out


def videomme_letter(answer):
    """`extract_characters_regex`: the prefixes removed; no letter when more than 10 words hold no A-D; else
    the first capital A, B, C or D anywhere (inside a word too: upstream's, kept). None where there is none
    (upstream scores it 0; here the judge reads it)."""
    text = answer.strip()
    for prefix in _VIDEOMME_PREFIXES:
        text = text.replace(prefix, "")
    found = re.search(r"[ABCD]", text)
    return found.group(0) if found else None


def videomme_verdict(box, example):
    letter = videomme_letter(box)
    return None if letter is None else float(letter.lower() == example["answer"].lower())


def videomme_headline(examples, records, samples):
    """videomme_aggregate_results' per-duration accuracies (short, medium, long videos); its overall is the
    mean over questions, the paper's accuracy."""
    duration = {ex["id"]: str(ex["meta"].get("duration")) for ex in examples}
    per = defaultdict(list)
    for r in records:
        per[duration[r["id"]]].append(r["score"])
    return {f"acc_{d}": sum(v) / len(v) for d, v in sorted(per.items()) if d in ("short", "medium", "long")}


# ---------------------------------------------------------------------------------------------------------
# Video-MMMU (lmms-lab/VideoMMMU)


def convert_videommmu(row, spec, where):
    """Multiple-choice (options a list, answer a letter) or open questions; the generic grader reads both."""
    video = f"{row['id']}.mp4"
    options = row.get("options") or []
    if str(row.get("question_type")) == "multiple-choice" and options:
        gold = str(row["answer"]).strip()
        if not re.fullmatch(r"[A-Z]", gold) or LETTERS.index(gold) >= len(options):
            return "answer_format"
        return {"video_file": video, "route": "choice", **choice_fields(str(row["question"]), options, gold)}
    answer = answer_text(row["answer"])  # a number as its exact decimal text
    if answer is None:
        return "answer_format"
    return {"video_file": video, "route": "rule", "question": str(row["question"]), "answer": answer}
