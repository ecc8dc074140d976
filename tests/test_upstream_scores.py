"""Where eval.py's scores parted from the benchmarks' own evaluators, on replies written by hand: each test
names the upstream repository and function whose score the expected value is, worked out by reading that
function (none of them is installed here: no network, and they need GPT judges or pandas pipelines)."""
import json

import pytest

from benchmarks import BENCHMARKS, charxiv, load, mmvet, prompts, score, videoqa, vlm
from reward import grade, score_detailed, score_rollouts
from rollout import Rollout
from test_eval import ScriptedEngine

PAPER_JUDGE = "You are an expert judge evaluating whether a model's response is correct"


def rollouts(*texts, finish="stop"):
    return [Rollout(text=t, prompt_ids=[], token_ids=[], finish_reason=finish) for t in texts]


def mathvista_row(**row):
    base = {"pid": "1", "question": "What is the ratio?", "image": "", "decoded_image": None, "choices": None,
            "unit": None, "precision": None, "answer": "1.45", "question_type": "free_form",
            "answer_type": "float", "metadata": {}, "query": "..."}
    return {**base, **row}


def mathvista(row, **options):
    spec = dict(BENCHMARKS["mathvista"], options=options)
    example, why = load.to_example(row, spec, "mathvista.jsonl:1")
    assert why is None
    return example


# ---------------------------------------------------------------------------------------------------------
# MathVista: its own parser (Rule+Judge) and its query's hint


@pytest.mark.parametrize("row,box,expected", [
    # lupantech/MathVista evaluation/calculate_score.py normalize_extracted_answer: a float is rounded to the
    # row's precision, an integer truncated (int(float(x))), then safe_equal compares the text
    (dict(answer="1.45", answer_type="float", precision=2.0), "1.4545", 1.0),  # was 0 by the generic rule
    (dict(answer="1.45", answer_type="float", precision=2.0), "1.4", 0.0),
    (dict(answer="0.5", answer_type="float", precision=1.0), "\\frac{1}{2}", 1.0),
    (dict(answer="3", answer_type="integer"), "3.7", 1.0),  # truncated, not rounded
    (dict(answer="3", answer_type="integer"), "4", 0.0),
    (dict(answer="12", answer_type="integer"), "12 cm", 1.0),
    (dict(answer="[1, 2, 3]", answer_type="list"), "[1,2,3]", 1.0),
    # multi_choice: "(B)" or a letter is that option; the option's own text is itself
    (dict(question_type="multi_choice", answer_type="text", choices=["hong kong", "osaka", "tokyo"],
          answer="tokyo"), "(C)", 1.0),
    (dict(question_type="multi_choice", answer_type="text", choices=["hong kong", "osaka", "tokyo"],
          answer="tokyo"), "B", 0.0),
    (dict(question_type="multi_choice", answer_type="text", choices=["hong kong", "osaka", "tokyo"],
          answer="tokyo"), "tokyo", 1.0),
])
def test_mathvista_parser_scores_as_calculate_score(row, box, expected):
    example = mathvista(mathvista_row(**row))
    (verdict,), = score.score_groups([rollouts(f"<think>x</think>So \\boxed{{{box}}}.")], [example], None)
    assert (verdict["score"], verdict["via"]) == (expected, "rule")


def test_mathvista_sends_what_the_parser_cannot_read_to_the_judge():
    """Upstream's GPT extractor reads any reply; here what the parser cannot read (no box, a box that is no
    number, a multi_choice text that is no option) goes to the judge with the paper's prompt, and a cut
    response whose box is wrong too (as Exact+Judge)."""
    free = mathvista(mathvista_row(answer="1.45", answer_type="float", precision=2.0))
    choice = mathvista(mathvista_row(question_type="multi_choice", answer_type="text",
                                     choices=["hong kong", "osaka", "tokyo"], answer="tokyo"))
    judge = ScriptedEngine(lambda p, k: '{"verdict": "correct"}')
    groups = [rollouts("It is about one and a half.", "\\boxed{about 1.45}"),
              rollouts("\\boxed{Tokyo, Japan}"),
              rollouts("\\boxed{2.0} and then", finish="length")]
    verdicts = score.score_groups(groups, [free, choice, free], judge)
    assert [[v["via"] for v in vs] for vs in verdicts] == [["judge", "judge"], ["judge"], ["judge"]]
    assert all(p.startswith(PAPER_JUDGE) for p in judge.calls[0]["prompts"])


def test_mathvista_question_carries_the_content_of_upstreams_hint():
    """evaluation/build_query.py (the hub's `query`) says what the answer is; its format half ("and provide
    the final value, e.g., 1.23, 1.34, 1.45, at the end") is replaced by the closer. --no-mathvista-hint."""
    two = mathvista(mathvista_row(answer_type="float", precision=2.0, unit="cm"))
    assert two["question"] == ("What is the ratio? (Unit: cm)\nHint: Please answer the question requiring a "
                               "floating-point number with two decimal places.")
    assert "e.g." not in two["question"] and "at the end" not in two["question"]
    assert mathvista(mathvista_row(answer="3", answer_type="integer"))["question"].endswith(
        "requiring an integer answer.")
    choice = mathvista(mathvista_row(question_type="multi_choice", answer_type="text", choices=["a", "b"],
                                     answer="b"))
    assert "Hint" not in choice["question"] and choice["answer"] == "B"  # only a format directive upstream
    assert mathvista(mathvista_row(answer_type="float", precision=2.0), mathvista_hint=False)["question"] == \
        "What is the ratio?"


# ---------------------------------------------------------------------------------------------------------
# MVBench and Video-MME: their parsers (Rule+Judge)


@pytest.mark.parametrize("box,letter", [
    # lmms-eval tasks/mvbench/utils.py mcq_acc `process`: "B. text" -> B; else the first standalone A-E
    ("B. the colour", "B"), ("(B)", "B"), ("b", "B"), ("Option C", "C"),
    ("a colour", "A"),  # the article reads as A (upstream's, kept)
    ("the colour", None),  # no letter: upstream scores 0 against the gold letter, here the judge reads it
])
def test_mvbench_letter_as_lmms_eval_reads_it(box, letter):
    assert videoqa.mvbench_letter(box) == letter


@pytest.mark.parametrize("box,letter", [
    # lmms-eval tasks/videomme/utils.py extract_characters_regex: prefixes removed, the first capital A-D
    ("The best answer is B", "B"), ("C. Nothing.", "C"), ("(D)", "D"),
    ("Based on the video, A", "B"),  # inside a word too (upstream's, kept)
    ("none of them", None),
])
def test_videomme_letter_as_lmms_eval_reads_it(box, letter):
    assert videoqa.videomme_letter(box) == letter


def test_video_parsers_score_and_defer_to_the_judge():
    mv = {"id": "m", "route": "mvbench", "question": "Q", "stem": "Q", "options": "A. x\nB. y", "answer": "B"}
    vm = dict(mv, route="videomme")
    judge = ScriptedEngine(lambda p, k: '{"verdict": "wrong"}')
    verdicts = score.score_groups([rollouts("\\boxed{B. y}", "\\boxed{y}"), rollouts("\\boxed{A}")], [mv, vm],
                                  judge)
    assert [[(v["via"], v["score"]) for v in vs] for vs in verdicts] == [[("rule", 1.0), ("judge", 0.0)],
                                                                         [("rule", 0.0)]]


# ---------------------------------------------------------------------------------------------------------
# CharXiv: the rubric by answer type, and category 4's instruction


def charxiv_row(**row):
    return {"figure_path": "7.jpg", "image": "", "reasoning_q": "How much does the accuracy decrease?",
            "reasoning_a": "9.17", "reasoning_q_source": 1, "reasoning_a_type": 4, **row}


def test_charxiv_rubric_is_picked_by_the_answer_type_not_the_question_source():
    """princeton-nlp/CharXiv src/reasoning_utils.py build_reasoning_grading_queries picks
    REASONING_GRADING_INST[inst_category], the answer type (`reasoning_a_type` on the hub); lmms-eval reads
    `reasoning_q_source` (who wrote the question) instead."""
    spec = BENCHMARKS["charxiv"]
    text, _ = load.to_example(charxiv_row(reasoning_a="increasing then decreasing", reasoning_q_source=1,
                                          reasoning_a_type=2), spec, "w")
    prompt = charxiv.charxiv_reasoning_prompt(text, "It rises then falls.")
    assert text["inst_category"] == 2
    assert prompt == prompts.REASONING_GRADING_PREFIX + prompts.REASONING_GRADING_INST[2] \
        .replace("<|question|>", "How much does the accuracy decrease?") \
        .replace("<|ground_truth|>", "increasing then decreasing") \
        .replace("<|response|>", "It rises then falls.")
    assert "referring to the same term" not in prompt  # rubric 1, which reasoning_q_source 1 would pick
    number, _ = load.to_example(charxiv_row(reasoning_q_source=3), spec, "w")
    assert number["inst_category"] == 4  # rubric 4 applies (never did by the question's source)


@pytest.mark.parametrize("answer,line", [
    # reasoning_utils.get_number_instruction, which build_reasoning_queries appends for category 4
    ("9.17", "* Your final answer must be a number with 2 decimal places."),
    ("3", "* Your final answer must be an exact integer."),
    ("1.0", "* Your final answer must be a number with 1 decimal places."),
])
def test_charxiv_category_four_keeps_its_number_instruction(answer, line):
    example, _ = load.to_example(charxiv_row(reasoning_a=answer), BENCHMARKS["charxiv"], "w")
    assert example["question"] == f"How much does the accuracy decrease?\n{line}"
    assert example["stem"] == "How much does the accuracy decrease?"  # the grader gets the raw question
    assert line not in charxiv.charxiv_reasoning_prompt(example, "9")
    off = dict(BENCHMARKS["charxiv"], options={"charxiv_number_instruction": False})
    assert load.to_example(charxiv_row(reasoning_a=answer), off, "w")[0]["question"] == example["stem"]
    other, _ = load.to_example(charxiv_row(reasoning_a_type=3), BENCHMARKS["charxiv"], "w")
    assert other["question"] == other["stem"]  # categories 1-3: format lines only, replaced by the closer


def test_charxiv_row_without_an_answer_type_names_its_file_and_line():
    row = charxiv_row()
    del row["reasoning_a_type"]
    with pytest.raises(ValueError, match=r"charxiv.jsonl:4: CharXiv needs the answer type reasoning_a_type"):
        load.to_example(row, BENCHMARKS["charxiv"], "charxiv.jsonl:4")
    assert load.to_example({**row, "inst_category": 1}, BENCHMARKS["charxiv"], "w")[0]["inst_category"] == 1


# ---------------------------------------------------------------------------------------------------------
# a list answer is not one number (VLMs-are-Blind's counting grids)


@pytest.mark.parametrize("box,expected", [
    # lmms-eval tasks/vlmsareblind/utils.py parse_response + vlmsareblind_process_results: a counting-grid
    # reply is read as "rows,columns" and compared as text with the groundtruth, here "5,6"
    ("56", 0.0), ("5,6", 1.0), ("5, 6", 1.0), ("(5, 6)", 1.0), ("6,5", 0.0), ("5", 0.0),
])
def test_a_grid_answer_is_an_ordered_pair_not_a_number(box, expected):
    row = {"task": "Counting Grid - Blank Grids", "image": "", "prompt": "Count the rows and columns. Answer "
           "with two numbers in curly brackets, e.g., {3}{4}.", "groundtruth": "5,6", "metadata": "{}"}
    example, _ = load.to_example(row, BENCHMARKS["vlmsareblind"], "w")
    assert example["question"] == "Count the rows and columns."
    (verdict,), = score.score_groups([rollouts(f"\\boxed{{{box}}}")], [example], None)
    assert (verdict["score"], verdict["via"]) == (expected, "rule")


@pytest.mark.parametrize("box,gold,expected", [
    ("56", "5,6", 0.0), ("5,6", "5,6", 1.0), ("1,000", "1000", 1.0), ("12,345,678", "12345678", 1.0),
])
def test_a_comma_is_a_thousands_separator_only_in_thousands(box, gold, expected):
    assert grade(f"\\boxed{{{box}}}", gold) == expected


# ---------------------------------------------------------------------------------------------------------
# the final answer, not the thinking


def test_a_box_only_inside_the_thinking_goes_to_the_judge_in_eval_and_in_training():
    """docs/EVAL.md: the rule grader reads the final answer (the last \\boxed{} or the sentence after
    </think>); only the judge looks inside the reasoning, and only when the final answer is missing. Was:
    scored 1 by rule. Training rewards route the same way (reward.score_rollouts)."""
    example = {"id": "q", "question": "2+5?", "answer": "7"}
    texts = ["<think>so \\boxed{7}</think> The answer is seven.", "<think>maybe \\boxed{7}",
             "<think>\\boxed{8}</think> \\boxed{7}"]
    assert [grade(t, "7") for t in texts] == [0.0, 0.0, 1.0]
    judge = ScriptedEngine(lambda p, k: '{"verdict": "correct"}')
    details = score_detailed([(example, t) for t in texts], judge)
    assert [d["via"] for d in details] == ["judge", "judge", "rule"]
    assert "<think>so \\boxed{7}</think>" in judge.calls[0]["prompts"][0]  # the judge gets the full response
    assert [d["via"] for d in score_detailed([(example, t) for t in texts], None)] == \
        ["unresolved", "unresolved", "rule"]
    teacher = ScriptedEngine(lambda p, k: '{"verdict": "wrong"}')
    assert score_rollouts([rollouts(*texts)], [example], teacher) == [[0.0, 0.0, 1.0]]
    assert len(teacher.calls[0]["prompts"]) == 2


def test_a_long_boxed_answer_is_read_and_compared_as_text():
    """Was: a box over 1,000 characters was skipped as no answer."""
    page = "The quick brown fox. " * 80
    assert grade(f"<think>...</think>\\boxed{{{page}}}", page) == 1.0
    assert grade(f"\\boxed{{{page}}}", page + "x") == 0.0


# ---------------------------------------------------------------------------------------------------------
# headline numbers as the benchmarks report them


def records_of(scores, samples=1):
    """{row id: [score of sample 0, ...]} -> records as score.evaluate writes them."""
    return [{"id": i, "sample": k, "score": s} for i, ss in scores.items() for k, s in enumerate(ss)]


def test_dynamath_worst_case_accuracy():
    """lmms-eval tasks/dynamath/reasoning/utils.py dynamath_aggregate_results ("dynamath_worst": the min over
    a seed's variants, averaged over seeds; "dynamath_average" over all rows)."""
    examples = [{"id": f"v{v}:{seed}", "meta": {"id": seed}} for seed in (1, 2) for v in (1, 2, 3)]
    scores = {"v1:1": [1.0, 1.0], "v2:1": [1.0, 0.0], "v3:1": [1.0, 1.0],
              "v1:2": [0.0, 1.0], "v2:2": [1.0, 1.0], "v3:2": [1.0, 1.0]}
    got = vlm.dynamath_headline(examples, records_of(scores), 2)
    # sample 0: seed 1 all right, seed 2 not -> 1/2; sample 1: seed 1 not, seed 2 all right -> 1/2
    assert got == {"worst_case_acc": pytest.approx(0.5), "average_acc": pytest.approx(10 / 12)}


def test_wemath_four_dimensional_metrics():
    """We-Math/We-Math evaluation/four_dimensional_metrics.py (calculate_metrics, compute_final_scores,
    update_main_results_df) on five composite problems, each a (sub-problems right, whole right) pattern."""
    patterns = {"1": ([True, True], True), "2": ([True, False], True), "3": ([False, False], True),
                "4": ([True, True], False), "5": ([False, True, True], False)}
    examples, scores = [], {}
    for pid, (parts, whole) in patterns.items():
        steps = len(parts)
        for key, right in [*[(f"{steps}steps_{k + 1}", p) for k, p in enumerate(parts)],
                           (f"{steps}steps_multi", whole)]:
            examples.append({"id": f"{pid}:{key}", "meta": {"ID": pid, "key": key}})
            scores[f"{pid}:{key}"] = [float(right)]
    got = vlm.wemath_headline(examples, records_of(scores), 1)
    # IK: 5 (a part wrong, whole wrong) = 1; IG: 4 = 1; CM strict: 1 = 1, loose: 1, 2 = 2;
    # RM strict: 2, 3 = 2, loose: 3 = 1; N = 5
    assert got == {"score_strict": pytest.approx((5 - 0.5 - 2 - 1) / 5),
                   "score_loose": pytest.approx((5 - 0.5 - 1 - 1) / 5),
                   "ik_rate": 0.2, "ig_rate": 0.2, "cm_strict_rate": 0.2, "cm_loose_rate": 0.4,
                   "rm_strict_rate": pytest.approx(2 / 3), "rm_loose_rate": pytest.approx(1 / 3)}


def test_videomme_per_duration_and_other_upstream_headlines():
    """lmms-eval videomme_aggregate_results (per video type), mvbench's mean over tasks, vlmsareblind
    vlmsareblind_aggregate_by_task (task_mean, the two counting-grid tasks as one), MMMU-Pro's overall (the
    mean of its standard-10 and vision accuracies)."""
    examples = [{"id": "a", "meta": {"duration": "short"}}, {"id": "b", "meta": {"duration": "short"}},
                {"id": "c", "meta": {"duration": "long"}}]
    scores = {"a": [1.0], "b": [0.0], "c": [1.0]}
    assert videoqa.videomme_headline(examples, records_of(scores), 1) == {"acc_long": 1.0, "acc_short": 0.5}
    tasks = [{"id": "a", "meta": {"task": "Counting Grid - Blank Grids"}},
             {"id": "b", "meta": {"task": "Counting Grid - Word Grids"}}, {"id": "c", "meta": {"task": "x"}}]
    assert vlm.vlmsareblind_headline(tasks, records_of(scores), 1) == {"task_mean": 0.75}
    configs = [{"id": "a", "meta": {"config": "standard (10 options)"}},
               {"id": "b", "meta": {"config": "vision"}},
               {"id": "c", "meta": {"config": "standard (4 options)"}}]
    assert vlm.mmmu_pro_headline(configs, records_of(scores), 1) == {
        "acc_standard_10_options": 1.0, "acc_standard_4_options": 1.0, "acc_vision": 0.0, "overall": 0.5}
    mv = [{"id": "a", "meta": {"config": "t1"}}, {"id": "b", "meta": {"config": "t1"}},
          {"id": "c", "meta": {"config": "t2"}}]
    assert videoqa.mvbench_headline(mv, records_of(scores), 1) == {"task_mean": 0.75}


# ---------------------------------------------------------------------------------------------------------
# judge replies: MM-Vet's re-asks, MMVU's structured output


def test_mmvet_re_asks_a_grade_it_cannot_read_as_its_evaluator_does():
    """yuweihao/MM-Vet mm-vet_evaluator.py `runs`: a grade that is no number in [0, 1] is asked again with
    "Predict the correctness of the answer (digit): " after the prompt, the temperature 0, 0.5, 1.0, 1.5; a
    fifth failure scores 0."""
    ex = {"id": "v1", "route": "mmvet", "stem": "What is x?", "answer": "-1<AND>-5", "question": "What is x?"}
    replies = {"once": iter(["correct", "0.5 (half)"]), "never": iter(["yes"] * 5)}

    def judge_reply(prompt, k):
        return next(replies["once" if "x is minus one" in prompt else "never"])

    judge = ScriptedEngine(judge_reply)
    once, never = score.score_groups([rollouts("x is minus one"), rollouts("x is three")], [ex, ex], judge)
    assert (once[0]["score"], once[0]["judge_retries"], once[0]["malformed"]) == (0.5, 1, False)
    assert (never[0]["score"], never[0]["judge_retries"], never[0]["malformed"]) == (0.0, 4, True)
    assert [c["temperature"] for c in judge.calls] == [0.0, 0.0, 0.5, 1.0, 1.5]
    assert all(p.endswith(mmvet.RETRY_SUFFIX) for c in judge.calls[1:] for p in c["prompts"])
    assert not judge.calls[0]["prompts"][0].endswith(mmvet.RETRY_SUFFIX)


@pytest.mark.parametrize("reply,score_", [
    # yale-nlp/MMVU utils/eval_utils.py: EvaluationOutput(extracted_answer: str, correct: bool), its
    # instruction a commented template with True/False; a reply the schema cannot hold scores 0
    # (get_acc_async's except branch)
    ('{"extracted_answer": "B", "correct": true}', 1.0),
    ('{\n    "extracted_answer": "B", // the letter\n    "correct": True // it matches\n}', 1.0),  # was 0
    ('```json\n{"extracted_answer": "C", "correct": False}\n```', 0.0),
    ('{"extracted_answer": "B", "correct": "true"}', 1.0),
    ('{"extracted_answer": "B", "correct": "yes"}', None),
    ('{"correct": true}', None),
    ("B is correct", None),
])
def test_mmvu_reads_the_judge_as_its_structured_output_would(reply, score_):
    parsed = videoqa.parse_mmvu(reply, {})
    assert (parsed["score"] if parsed else None) == score_


def test_mmvu_malformed_replies_are_counted():
    ex = {"id": "m", "route": "mmvu", "question_type": "open-ended", "stem": "Which?", "answer": "a ramp",
          "question": "Which?"}
    judge = ScriptedEngine(lambda p, k: "It is correct." if "one" in p[1]["content"] else
                           '{"extracted_answer": "ramp", "correct": True}')
    res = score.evaluate(ScriptedEngine(lambda p, k: ["\\boxed{one}", "\\boxed{ramp}"][k]), [ex], samples=2,
                         judge=judge)
    assert res["judge_malformed"] == 1 and res["accuracy"] == 0.5 and res["judged"] == 2
    assert json.loads(json.dumps(res["records"]))[1]["judge_fields"]["extracted"] == "ramp"
