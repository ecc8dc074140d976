"""What README.md says about the code is true: every top-level file is in its file tree with its line count,
every name in its step table exists, every link resolves, and "one ZPPO step is N lines" counts the
definitions the step runs through. When the code changes, the failure message gives the numbers to write."""
import ast
import importlib
import os
import re

from conftest import ROOT

# the definitions one ZPPO step runs through, in the five files README tells a reader to read
STEP = {
    "train.py": ["train_loop", "sample_groups", "sample_and_score", "teacher_correct", "helped_groups",
                 "update", "update_buffer"],
    "reformulate.py": ["CLOSER", "BCQ_INSTRUCTION", "NCQ_WRONG", "NCQ_INSTRUCTION", "COMPRESSION_TEMPLATE",
                       "with_closer", "user_prompt", "plain_prompt", "group_prompt", "_candidates",
                       "bcq_prompt", "ncq_prompt", "compression_prompt", "extract_summary", "dedup", "precap",
                       "postcap", "pick_bcq_pair", "compress_candidates", "reformulated_prompts",
                       "bcq_ncq_groups"],
    "zppo.py": ["Group", "Episode", "episodes_of", "compute_advantages", "policy_loss", "Plan",
                "plan_minibatches", "passes", "micro_batches", "shortest", "old_logprobs", "sync_check",
                "coverage_filler", "pad_rows", "clipped_loss", "clip_gradients", "drop_unreached",
                "ppo_update"],
    "buffer.py": ["ReplayBuffer"],
    "reward.py": ["grade", "score_rollouts", "score_nested", "score_responses", "score_detailed",
                  "rule_verdict"],
}


def read(path):
    with open(os.path.join(ROOT, path)) as f:
        return f.read()


README = read("README.md")


def definition_lines(path, names):
    tree = ast.parse(read(path))
    found, lines = set(), 0
    for node in tree.body:
        name = getattr(node, "name", None) or (ast.unparse(node.targets[0]) if isinstance(node, ast.Assign)
                                               else None)
        if name in names:
            start = node.decorator_list[0].lineno if getattr(node, "decorator_list", None) else node.lineno
            lines += node.end_lineno - start + 1
            found.add(name)
    assert found == set(names), f"{path}: no {sorted(set(names) - found)}"
    return lines


def test_the_step_s_line_count_is_the_definitions_it_runs_through():
    total = sum(definition_lines(path, names) for path, names in STEP.items())
    assert f"One ZPPO step is {total} lines in five files" in README, f"write: One ZPPO step is {total} lines"


def test_the_file_tree_lists_every_top_level_file_with_its_line_count():
    tree = README.split("## Files", 1)[1].split("```", 2)[1]
    listed = dict(re.findall(r"^(\S+\.py)\s.*\((\d+)\)$", tree, re.MULTILINE))
    top = sorted(f for f in os.listdir(ROOT) if f.endswith(".py"))
    assert sorted(listed) == top
    with_counts = {f: len(read(f).splitlines()) for f in top}
    assert {f: int(n) for f, n in listed.items()} == with_counts, f"write: {with_counts}"
    for folder in re.findall(r"^(\S+)/\s", tree, re.MULTILINE):
        assert os.path.isdir(os.path.join(ROOT, folder)), folder


def test_every_name_in_the_step_table_exists():
    table = README.split("## One step", 1)[1].split("##", 1)[0]
    names = re.findall(r"`(\w+)\.(\w+)(?:\.(\w+))?`", table)
    assert len(names) == 8  # one per row
    for module, attr, inner in names:
        obj = getattr(importlib.import_module(module), attr)
        assert not inner or hasattr(obj, inner), (module, attr, inner)


def test_every_link_resolves():
    for target in re.findall(r"\]\(([^)#]+)\)", README):
        assert os.path.exists(os.path.join(ROOT, target)), target
