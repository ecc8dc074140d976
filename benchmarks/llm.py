"""The paper's LLM benchmarks' own pieces (its Table 6): the multi-config sets' subject lists, GPQA's option
columns, MMLU-Redux's re-targeted rows, MultiChallenge's conversation, and the two LLM BenchJudges:
MultiChallenge's YES/NO verifier and HLE's CAIS judge (their prompt texts in prompts.py). The rest of these
benchmarks is the generic loading in load.py and the Exact+Judge grader in reward.py."""
import json
import re

import jinja2

from benchmarks.prompts import HLE_PROMPT, MULTICHALLENGE_PROMPT
from reward import after_thinking, clip_start

AIME2025_CONFIGS = ["AIME2025-I", "AIME2025-II"]
# The 57 MMLU subjects, as mmlu-redux-2.0 names its configs (there is no combined config). The names are
# those of the set's card; lm-evaluation-harness (tasks/mmlu-redux) and evalscope (benchmarks/mmlu_redux)
# load mirrors of the set by the same 57 names. Not loaded from the hub here (no network).
MMLU_REDUX_SUBJECTS = [
    "abstract_algebra", "anatomy", "astronomy", "business_ethics", "clinical_knowledge", "college_biology",
    "college_chemistry", "college_computer_science", "college_mathematics", "college_medicine",
    "college_physics", "computer_security", "conceptual_physics", "econometrics", "electrical_engineering",
    "elementary_mathematics", "formal_logic", "global_facts", "high_school_biology", "high_school_chemistry",
    "high_school_computer_science", "high_school_european_history", "high_school_geography",
    "high_school_government_and_politics", "high_school_macroeconomics", "high_school_mathematics",
    "high_school_microeconomics", "high_school_physics", "high_school_psychology", "high_school_statistics",
    "high_school_us_history", "high_school_world_history", "human_aging", "human_sexuality",
    "international_law", "jurisprudence", "logical_fallacies", "machine_learning", "management", "marketing",
    "medical_genetics", "miscellaneous", "moral_disputes", "moral_scenarios", "nutrition", "philosophy",
    "prehistory", "professional_accounting", "professional_law", "professional_medicine",
    "professional_psychology", "public_relations", "security_studies", "sociology", "us_foreign_policy",
    "virology", "world_religions",
]
# The 52 C-Eval subjects, the configs of ceval/ceval-exam (no combined config), as its card lists them and
# as lm-evaluation-harness (tasks/ceval, which loads ceval/ceval-exam itself) names them. Not loaded here.
CEVAL_SUBJECTS = [
    "computer_network", "operating_system", "computer_architecture", "college_programming", "college_physics",
    "college_chemistry", "advanced_mathematics", "probability_and_statistics", "discrete_mathematics",
    "electrical_engineer", "metrology_engineer", "high_school_mathematics", "high_school_physics",
    "high_school_chemistry", "high_school_biology", "middle_school_mathematics", "middle_school_biology",
    "middle_school_physics", "middle_school_chemistry", "veterinary_medicine", "college_economics",
    "business_administration", "marxism", "mao_zedong_thought", "education_science", "teacher_qualification",
    "high_school_politics", "high_school_geography", "middle_school_politics", "middle_school_geography",
    "modern_chinese_history", "ideological_and_moral_cultivation", "logic", "law",
    "chinese_language_and_literature", "art_studies", "professional_tour_guide", "legal_professional",
    "high_school_chinese", "high_school_history", "middle_school_history", "civil_servant", "sports_science",
    "plant_protection", "basic_medicine", "clinical_medicine", "urban_and_rural_planner", "accountant",
    "fire_engineer", "environmental_impact_assessment_engineer", "tax_accountant", "physician",
]
GPQA_OPTIONS = ["Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3"]
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def redux_target(row, options, redux_rows):
    """(options, gold index) of an MMLU-Redux row under --mmlu-redux-rows, or (None, skip reason). "ok" keeps
    only rows annotated ok; "corrected" follows evalscope: wrong_groundtruth takes correct_answer (an index or
    a letter), no_correct_answer puts correct_answer in place of the marked option, rows with several right
    options are skipped (one letter is graded here), other annotations keep the original answer."""
    error_type, answer = str(row["error_type"]).strip(), row["answer"]
    if error_type == "ok":
        return options, answer
    if redux_rows == "ok":
        return None, f"error_type={error_type}"
    fix = str(row.get("correct_answer") or "").strip()
    if error_type == "wrong_groundtruth":
        index = (int(fix) if fix.isdigit() else LETTERS.index(fix.upper()) if re.fullmatch("[A-Za-z]", fix)
                 else None)
        if index is None or index >= len(options):
            return None, f"error_type={error_type} (no usable fix)"
        return options, index
    if error_type == "no_correct_answer":
        index = str(answer).strip()
        if not fix or isinstance(answer, bool) or not index.isdigit() or int(index) >= len(options):
            return None, f"error_type={error_type} (no usable fix)"
        options = list(options)
        options[int(answer)] = fix
        return options, answer
    if error_type == "multiple_correct_answers":
        return None, f"error_type={error_type}"
    return options, answer


def conversation(value, where):
    """MultiChallenge's conversation as chat messages. `datasets` may hand a list-of-structs column over as
    {"role": [...], "content": [...]}; both shapes are accepted."""
    if isinstance(value, dict) and isinstance(value.get("role"), list):
        value = [{"role": r, "content": c} for r, c in zip(value["role"], value["content"])]
    if not (isinstance(value, list) and value and all(isinstance(m, dict) and {"role", "content"} <= set(m)
                                                      for m in value)):
        raise ValueError(f"{where}: 'conversation' must be a non-empty list of {{role, content}} messages")
    return [{"role": str(m["role"]), "content": str(m["content"])} for m in value]


# ---------------------------------------------------------------------------------------------------------
# BenchJudge: MultiChallenge (Scale AI's verifier) and HLE (CAIS's judge)

HLE_KEYS = {"extracted_final_answer", "reasoning", "correct", "confidence"}
_MULTICHALLENGE_TEMPLATE, _HLE_TEMPLATE = jinja2.Template(MULTICHALLENGE_PROMPT), jinja2.Template(HLE_PROMPT)


def multichallenge_prompt(example, response):
    # what MultiChallenge grades: the reply the user would read (after any </think>), not the reasoning
    return _MULTICHALLENGE_TEMPLATE.render(response=clip_start(after_thinking(response)),
                                           target_question=example["target_question"])


def yes_no_verdict(reply):
    """"YES" or "NO" from a MultiChallenge judge reply: a {"reasoning", "verdict"} JSON object (upstream's
    schema) or, as the prompt asks, reasoning followed by the verdict: the last standalone upper-case YES or
    NO (lower case is prose: "there is no ..."); None when there is neither."""
    text = after_thinking(reply)
    try:
        obj = json.loads(text)
        if isinstance(obj, dict) and obj.get("verdict") in ("YES", "NO"):
            return obj["verdict"]
    except (ValueError, RecursionError):
        pass
    found = re.findall(r"\b(YES|NO)\b", text)
    return found[-1] if found else None


def parse_multichallenge(reply, example):
    verdict = yes_no_verdict(reply)
    return None if verdict is None else {"score": float(verdict == example["answer"]), "verdict": verdict}


def hle_prompt(example, response):
    # the paper: CAIS's judge inspects the full response, reasoning included
    return _HLE_TEMPLATE.render(question=example["question"], response=clip_start(response),
                                correct_answer=example["answer"])


def parse_hle(reply, example):
    """The CAIS judge's four fields as one JSON object (a think block before it is allowed; `strict`, a field
    of upstream's schema, may be present); None for anything else, which scores 0."""
    try:
        obj = json.loads(after_thinking(reply))
    except (ValueError, RecursionError):
        return None
    if not (isinstance(obj, dict) and HLE_KEYS <= set(obj) <= HLE_KEYS | {"strict"}
            and obj["correct"] in ("yes", "no")):
        return None
    return {"score": float(obj["correct"] == "yes"), "extracted": str(obj["extracted_final_answer"]),
            "confidence": obj["confidence"]}
