"""The evaluation stack behind eval.py (docs/EVAL.md; docs/evaluation.md): the paper's 31 benchmarks (and the
project's own math sets), one table, BENCHMARKS, below, and the modules it points into:

    load.py      rows (hub or DATA_DIR/NAME.jsonl) -> examples: choices lettered, directives stripped, images
    score.py     the student's answers scored by each protocol; avg@k, the headline numbers, the summary
    judges.py    the BenchJudge machinery (a benchmark's own judge prompt, its parser, its re-asks)
    prompts.py   the judge texts that must be verbatim
    report.py    the markdown table, `--list`, the lm-evaluation-harness-shaped results and sample logs
    cache.py     finished rows kept for a rerun, and the lock that keeps one writer per output
    llm.py       the LLM benchmarks' pieces: subject lists, MMLU-Redux, MultiChallenge, HLE
    mathvista.py, charxiv.py, mmvet.py, ocrbench.py, det.py (ANLS), vlm.py: the VLM benchmarks' pieces
    videoqa.py   the video benchmarks' converters, MMVU's judge, MVBench's and Video-MME's parsers
    video.py     frames sampled from a video file, cached, and turned into the model's video inputs

A table entry says where a benchmark's rows live and how to score them. `hub` with `config` (one) or `configs`
(loaded one by one and concatenated), `split` (or `splits`); `fields` maps our names to the set's own columns
(all required); `id` names the row id column; `choices` is a list column (or list of columns) of options
rendered "A. ...", the gold answer being an option's index, letter or text (`answer_is`); `route` picks the
scorer (score.py): "rule" (Exact+Judge on short answers), "choice" (Exact+Judge on letters), a Rule+Judge
parser ("mathvista", "mvbench", "videomme"), a Det. metric ("anls", "ocrbench") or a BenchJudge; `images`: the
image columns (a row with an image goes to a vision-language student with it, and is skipped and counted for a
text-only one); `video`: the row's video column; `optional`: our fields a config may lack (MMMU-Pro's vision
config has the question inside the image); `options_text`: a column of option text appended to the question
(WeMath); `convert(row, spec, where)`: the benchmark's own row converter (its fields or a skip reason;
`spec["options"]` holds eval.py's prompt flags, e.g. mathvista_hint); `expand(row, where)`: one hub row made
several (CharXiv's four descriptive questions); `keep`: columns kept on the example (`meta`) for a headline;
`headline(examples, records, samples)`: the numbers the benchmark's own evaluator reports beside the paper's
accuracy; `aggregate`: where upstream's headline *is* the benchmark's score (OCRBench v2: the mean of its
capability means).

Family "llm" is the paper's 10 LLM benchmarks (Table 6), "vlm" its 16 VLM benchmarks (Table 5), "video" its
5 video benchmarks (Table 7): each family's unweighted mean is the paper's average. The project's own math
sets are family "math" and CharXiv's descriptive questions "extra", so they never enter those averages.
"""
from benchmarks.charxiv import (
    convert_charxiv_descriptive,
    convert_charxiv_reasoning,
    expand_charxiv_descriptive,
)
from benchmarks.det import convert_infovqa
from benchmarks.llm import AIME2025_CONFIGS, CEVAL_SUBJECTS, GPQA_OPTIONS, MMLU_REDUX_SUBJECTS
from benchmarks.mathvista import convert_mathvista
from benchmarks.mmvet import convert_mmvet
from benchmarks.ocrbench import convert_ocrbench, ocrbench_overall
from benchmarks.videoqa import (
    MVBENCH_CONFIGS,
    convert_mmvu,
    convert_mvbench,
    convert_videomme,
    convert_videommmu,
    mvbench_headline,
    videomme_headline,
)
from benchmarks.vlm import (
    convert_babyvision,
    convert_vlmsareblind,
    dynamath_headline,
    mmmu_pro_headline,
    vlmsareblind_headline,
    wemath_headline,
)

MMMU_PRO_CONFIGS = ["standard (10 options)", "standard (4 options)", "vision"]
MMMU_PRO_IMAGES = [f"image_{i}" for i in range(1, 8)]
DYNAMATH_SPLITS = [f"sample_variant{i}" for i in range(1, 11)]
QA = {"question": "question", "answer": "answer"}

BENCHMARKS = {
    # --- the paper's LLM benchmarks (Table 6)
    "aime2025": dict(family="llm", protocol="Exact+Judge", hub="opencompass/AIME2025",
                     configs=AIME2025_CONFIGS, split="test", route="rule", fields=QA),
    "aime2026": dict(family="llm", protocol="Exact+Judge", hub="MathArena/aime_2026", split="train",
                     route="rule", fields={"question": "problem", "answer": "answer"}, id="problem_idx"),
    "ceval": dict(family="llm", protocol="Exact+Judge", hub="ceval/ceval-exam", configs=CEVAL_SUBJECTS,
                  split="val", route="choice", fields=QA, choices=["A", "B", "C", "D"], answer_is="letter",
                  id="id"),
    "gpqa_diamond": dict(family="llm", protocol="Exact+Judge", hub="Idavidrein/gpqa", config="gpqa_diamond",
                         split="train", route="choice",
                         fields={"question": "Question", "answer": "Correct Answer"}, choices=GPQA_OPTIONS,
                         answer_is="text", shuffle=True, id="Record ID"),
    "hle": dict(family="llm", protocol="BenchJudge", hub="cais/hle", split="test", route="hle", fields=QA,
                id="id", images=["image"]),
    "imo_answerbench": dict(family="llm", protocol="Exact+Judge", hub="OpenEvals/IMO-AnswerBench",
                            split="train", route="rule",
                            fields={"question": "Problem", "answer": "Short Answer"}, id="Problem ID"),
    "mmlu": dict(family="llm", protocol="Exact+Judge", hub="cais/mmlu", config="all", split="test",
                 route="choice", fields=QA, choices="choices", answer_is="index"),
    "mmlu_pro": dict(family="llm", protocol="Exact+Judge", hub="TIGER-Lab/MMLU-Pro", split="test",
                     route="choice", fields=QA, choices="options", answer_is="letter", id="question_id"),
    "mmlu_redux": dict(family="llm", protocol="Exact+Judge", hub="edinburgh-dawg/mmlu-redux-2.0",
                       configs=MMLU_REDUX_SUBJECTS, split="test", route="choice",
                       fields={**QA, "error_type": "error_type"}, choices="choices", answer_is="index"),
    "multichallenge": dict(family="llm", protocol="BenchJudge", hub="ScaleAI/MultiChallenge", split="test",
                           route="multichallenge", id="question_id",
                           fields={"conversation": "conversation", "target_question": "target_question",
                                   "answer": "pass_criteria"}),
    # --- the paper's VLM benchmarks (Table 5); columns from the sets' cards and the reference evaluators
    "ai2d": dict(family="vlm", protocol="Exact+Judge", hub="lmms-lab/ai2d", split="test", route="choice",
                 fields=QA, choices="options", answer_is="index", images=["image"]),
    # UnipatAI/BabyVision (train; image, question, ansType, options, choiceAns, blankAns, type, subtype)
    "babyvision": dict(family="vlm", protocol="Exact+Judge", hub="UnipatAI/BabyVision", split="train",
                       route="choice", fields={"question": "question", "answer_type": "ansType"},
                       images=["image"], id="taskId", convert=convert_babyvision),
    # princeton-nlp/CharXiv (validation; image, reasoning_q, reasoning_a, reasoning_q_source,
    # reasoning_a_type, descriptive_q1-4, descriptive_a1-4, subplot_loc/row/col, figure_path)
    "charxiv": dict(family="vlm", protocol="BenchJudge", hub="princeton-nlp/CharXiv", split="validation",
                    route="charxiv_reasoning", id="figure_path", images=["image"],
                    fields={"question": "reasoning_q", "answer": "reasoning_a"},
                    convert=convert_charxiv_reasoning),
    # DynaMath/DynaMath_Sample: splits sample_variant1..10 of the same 501 seeds (id, question, decoded_image,
    # ground_truth, answer_type, subject, knowledge_level)
    "dynamath": dict(family="vlm", protocol="Exact+Judge", hub="DynaMath/DynaMath_Sample",
                     splits=DYNAMATH_SPLITS, split=DYNAMATH_SPLITS[0], route="rule",
                     fields={"question": "question", "answer": "ground_truth"}, images=["decoded_image"],
                     id="id", keep=["id"], headline=dynamath_headline),
    # FlagEval/EmbSpatial-Bench (test; question_id, image, question, answer_options, answer an index)
    "embspatial": dict(family="vlm", protocol="Exact+Judge", hub="FlagEval/EmbSpatial-Bench", split="test",
                       route="choice", fields=QA, choices="answer_options", answer_is="index",
                       images=["image"], id="question_id"),
    # lmms-lab/DocVQA config InfographicVQA (validation: the test split's answers are hidden)
    "infovqa": dict(family="vlm", protocol="Det.", hub="lmms-lab/DocVQA", config="InfographicVQA",
                    split="validation", route="anls", fields={"question": "question", "answer": "answers"},
                    images=["image"], id="questionId", convert=convert_infovqa),
    "mathverse": dict(family="vlm", protocol="Exact+Judge", hub="CaraJ/MathVerse-lmmseval", config="testmini",
                      split="testmini", route="rule", fields=QA, images=["image"], id="sample_index"),
    "mathvision": dict(family="vlm", protocol="Exact+Judge", hub="MathLLMs/MathVision", split="test",
                       route="rule", fields=QA, choices="options", answer_is="letter", choices_optional=True,
                       images=["decoded_image"], id="id"),
    # AI4Math/MathVista (testmini; pid, question, decoded_image, choices, unit, precision, answer,
    # question_type, answer_type, query)
    "mathvista": dict(family="vlm", protocol="Rule+Judge", hub="AI4Math/MathVista", split="testmini",
                      route="mathvista", fields=QA, images=["decoded_image"], id="pid",
                      convert=convert_mathvista),
    "mmmu_pro": dict(family="vlm", protocol="Exact+Judge", hub="MMMU/MMMU_Pro", configs=MMMU_PRO_CONFIGS,
                     split="test", route="choice", fields=QA, optional=["question"], choices="options",
                     answer_is="letter", images=["image", *MMMU_PRO_IMAGES], id="id",
                     headline=mmmu_pro_headline),
    # lmms-lab/MMVet (test; question_id, image, question, answer, image_source, capability)
    "mmvet": dict(family="vlm", protocol="BenchJudge", hub="lmms-lab/MMVet", split="test", route="mmvet",
                  fields=QA, images=["image"], id="question_id", convert=convert_mmvet),
    # ling99/OCRBench_v2 (test; id, dataset_name, type, question, answers, eval, bbox, image, ...): English
    # and Chinese are two benchmarks, split by the task type's language suffix
    "ocrbench_v2_en": dict(family="vlm", protocol="Det.", hub="ling99/OCRBench_v2", split="test",
                           route="ocrbench", language="en",
                           fields={"question": "question", "answer": "answers", "type": "type"},
                           images=["image"], id="id", convert=convert_ocrbench, aggregate=ocrbench_overall),
    "ocrbench_v2_cn": dict(family="vlm", protocol="Det.", hub="ling99/OCRBench_v2", split="test",
                           route="ocrbench", language="cn",
                           fields={"question": "question", "answer": "answers", "type": "type"},
                           images=["image"], id="id", convert=convert_ocrbench, aggregate=ocrbench_overall),
    # neulab/VisualPuzzles (train; options: 4, or none when they are in the image; answer a letter)
    "visualpuzzles": dict(family="vlm", protocol="Exact+Judge", hub="neulab/VisualPuzzles", split="train",
                          route="choice", fields=QA, choices="options", answer_is="letter",
                          choices_optional=True, images=["image"], id="id"),
    # XAI/vlmsareblind (valid; task, image, prompt, groundtruth, metadata)
    "vlmsareblind": dict(family="vlm", protocol="Exact+Judge", hub="XAI/vlmsareblind", split="valid",
                         route="rule", fields={"question": "prompt", "answer": "groundtruth"},
                         images=["image"], convert=convert_vlmsareblind, keep=["task"],
                         headline=vlmsareblind_headline),
    # We-Math/We-Math (testmini; ID, split, knowledge concept, question, option, answer, image_path, key, ...)
    "wemath": dict(family="vlm", protocol="Exact+Judge", hub="We-Math/We-Math", split="testmini",
                   route="choice", fields=QA, options_text="option", images=["image"], id="ID",
                   keep=["ID", "key"], headline=wemath_headline),
    # --- the paper's video benchmarks (Table 7)
    # yale-nlp/MMVU (validation; id, video a resolve/ URL of the set's file, question, choices, answer,
    # question_type, subject, ...)
    "mmvu": dict(family="video", protocol="BenchJudge", hub="yale-nlp/MMVU", split="validation", route="mmvu",
                 fields={**QA, "type": "question_type"}, video="video", id="id", convert=convert_mmvu),
    # OpenGVLab/MVBench: 20 task configs (split train; video, question, candidates, answer the right one)
    "mvbench": dict(family="video", protocol="Rule+Judge", hub="OpenGVLab/MVBench", configs=MVBENCH_CONFIGS,
                    split="train", route="mvbench", fields=QA, video="video", convert=convert_mvbench,
                    headline=mvbench_headline),
    # lmms-lab/Video-MME (test; videoID, duration, domain, question_id, task_type, question, options
    # "A. ...", answer a letter); subtitles from --video-dir/subtitle/VIDEOID.srt
    "videomme": dict(family="video", protocol="Rule+Judge", hub="lmms-lab/Video-MME", split="test",
                     route="videomme", fields={**QA, "video": "videoID"}, video="videoID", id="question_id",
                     convert=convert_videomme, subtitles=False, keep=["duration"],
                     headline=videomme_headline),
    "videomme_sub": dict(family="video", protocol="Rule+Judge", hub="lmms-lab/Video-MME", split="test",
                         route="videomme", fields={**QA, "video": "videoID"}, video="videoID",
                         id="question_id", convert=convert_videomme, subtitles=True, keep=["duration"],
                         headline=videomme_headline),
    # lmms-lab/VideoMMMU: configs Perception, Comprehension, Adaptation (test; id, question, options, answer,
    # question_type)
    "videommmu": dict(family="video", protocol="Rule+Judge", hub="lmms-lab/VideoMMMU",
                      configs=["Perception", "Comprehension", "Adaptation"], split="test", route="choice",
                      fields=QA, video="id", id="id", convert=convert_videommmu),
    # --- not in the paper's averages
    "charxiv_descriptive": dict(family="extra", protocol="BenchJudge", hub="princeton-nlp/CharXiv",
                                split="validation", route="charxiv_descriptive", id="figure_path",
                                images=["image"], fields={f"q{k}": f"descriptive_q{k}" for k in (1, 2, 3, 4)},
                                expand=expand_charxiv_descriptive, convert=convert_charxiv_descriptive),
    "gsm8k": dict(family="math", protocol="Exact+Judge", hub="openai/gsm8k", config="main", split="test",
                  route="rule", fields=QA),
    "math500": dict(family="math", protocol="Exact+Judge", hub="HuggingFaceH4/MATH-500", split="test",
                    route="rule", fields={"question": "problem", "answer": "answer"}, id="unique_id"),
    "arithmetic": dict(family="math", protocol="Exact+Judge", hub=None, split="test", route="rule",
                       fields={}),
}
PAPER_FAMILIES = {"vlm": 16, "llm": 10, "video": 5}  # the paper's Tables 5-7: benchmarks per family


def paper_families():
    """The paper's families and their benchmarks, as the table defines them."""
    return {fam: [n for n, s in BENCHMARKS.items() if s["family"] == fam] for fam in PAPER_FAMILIES}
