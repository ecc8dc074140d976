"""Never lose a run (issue 11): each ordinary mistake ends in a clear message or the right behaviour, and
no data is lost. One test per case; the tiny random Qwen3.5 model, one or two steps each."""
import json
import os

import pytest
import torch
from safetensors.torch import load_file

import checkpoint
import train
import zppo
from test_train import ARGS, parity_grade, read_metrics


def config(tiny_model, out, *extra):
    out_dir = ["--out-dir", out] if out else []
    return train.parse_config(["--student", tiny_model, *ARGS, "--steps", "1", *out_dir, *extra])


def checkpoints(out):
    return sorted(os.listdir(os.path.join(out, "checkpoints")))


def latest(out):
    with open(os.path.join(out, "latest")) as f:
        return f.read()


def read(path):
    with open(path) as f:
        return f.read()


def test_a_fresh_run_never_clobbers_a_folder_that_holds_a_run(tiny_model, tmp_path):
    """Was: metrics.jsonl cut from 4 lines to 1, the new checkpoint pruned, `latest` naming a deleted one."""
    out = str(tmp_path / "a")
    train.main(config(tiny_model, out, "--steps", "2", "--save-every", "1"))
    before = read(os.path.join(out, "metrics.jsonl"))
    with pytest.raises(SystemExit, match=r"already holds a run \(metrics.jsonl, latest, checkpoints\); "
                                         r"continue it with --resume .*--overwrite"):
        train.main(config(tiny_model, out))
    assert read(os.path.join(out, "metrics.jsonl")) == before  # nothing touched
    assert checkpoints(out) == ["step_000001", "step_000002"]
    train.main(config(tiny_model, out, "--overwrite"))  # replaces the old run, all of it
    assert [m["step"] for m in read_metrics(out)] == [1]
    assert checkpoints(out) == ["step_000001"] and latest(out) == "step_000001"


def test_pruning_keeps_the_checkpoint_just_written_and_latest_names_a_complete_one(tiny_model, tmp_path):
    """A run resumed from an earlier checkpoint of a longer one: the later checkpoint is left alone (it is
    replaced when the run gets there), the one just written is never pruned, and `latest` names it."""
    out = str(tmp_path / "p")
    train.main(config(tiny_model, out, "--steps", "3", "--save-every", "1", "--keep-checkpoints", "3"))
    train.main(config(tiny_model, None, "--steps", "2", "--keep-checkpoints", "1",
                      "--resume", os.path.join(out, "checkpoints", "step_000001")))
    assert checkpoints(out) == ["step_000002", "step_000003"]  # step 1 pruned (keep 1), step 3 not counted
    assert latest(out) == "step_000002" and checkpoint.find_checkpoint(out).endswith("step_000002")
    assert checkpoint.checkpoint_problem(os.path.join(out, "checkpoints", "step_000002")) is None
    assert [m["step"] for m in read_metrics(out)] == [1, 2]


def test_resume_writes_into_the_resumed_run_folder(tiny_model, tmp_path, monkeypatch):
    """Was: `--resume runs/A` without --out-dir wrote into runs/zppo, another run's folder."""
    monkeypatch.chdir(tmp_path)  # the default --out-dir, runs/zppo, is relative
    out = str(tmp_path / "A")
    train.main(config(tiny_model, out))
    with pytest.raises(SystemExit, match=r"--out-dir .*elsewhere: --resume continues the run in .*A "
                                         r"and writes"):
        train.main(config(tiny_model, str(tmp_path / "elsewhere"), "--steps", "2", "--resume", out))
    cfg = config(tiny_model, None, "--steps", "2", "--resume", out)
    train.main(cfg)
    assert cfg.out_dir == out and [m["step"] for m in read_metrics(out)] == [1, 2]
    assert not os.path.exists(tmp_path / "runs") and not os.path.exists(tmp_path / "elsewhere")
    with open(os.path.join(out, "config.json")) as f:
        assert json.load(f)["steps"] == 2


def nan_loss(real):
    def policy_loss(*args, **kwargs):
        loss, metrics = real(*args, **kwargs)
        return loss * float("nan"), metrics
    return policy_loss


def test_a_nan_loss_skips_the_update_and_repeated_ones_stop_the_run(tiny_model, tmp_path, monkeypatch):
    """Was: nan logged without a word, every tensor of the next checkpoint NaN, the next step dying in
    sampling."""
    monkeypatch.setattr("reward.grade", parity_grade)  # mixed groups: there is a gradient to poison
    monkeypatch.setattr(zppo, "policy_loss", nan_loss(zppo.policy_loss))
    out = str(tmp_path / "n")
    with pytest.warns(UserWarning, match="non-finite loss .*optimizer step skipped, weights unchanged"):
        train.main(config(tiny_model, out, "--steps", "2"))
    metrics = read_metrics(out)
    assert all(m["train/skipped_nonfinite"] >= 1 and m["train/loss"] != m["train/loss"]  # NaN
               for m in metrics)
    weights = load_file(os.path.join(out, "checkpoints", "step_000002", "model.safetensors"))
    initial = load_file(os.path.join(tiny_model, "model.safetensors"))
    assert all(torch.equal(weights[k], initial[k]) for k in initial)  # finite, and untouched by the NaNs

    out = str(tmp_path / "stop")
    with pytest.raises(SystemExit, match=r"step 2: stopping after 2 rollout steps in a row whose update "
                                         r"had a"):
        train.main(config(tiny_model, out, "--steps", "5", "--max-nonfinite-steps", "2"))
    assert [m["step"] for m in read_metrics(out)] == [1, 2]
    assert checkpoints(out) == ["step_000002"] and latest(out) == "step_000002"  # resumable after a fix


def test_a_checkpoint_is_never_written_from_non_finite_weights(tiny_model, tmp_path, monkeypatch):
    def poisoning_update(model, *args, **kwargs):
        with torch.no_grad():
            next(model.parameters()).fill_(float("inf"))
        return {"train/skipped_nonfinite": 0}, [0.0, 0.0]  # the metrics, the first mini-batch's entropy sums

    monkeypatch.setattr(train, "ppo_update", poisoning_update)
    out = str(tmp_path / "w")
    with pytest.raises(SystemExit, match=r"step 1: weights hold NaN or inf \(model.embed_tokens.weight\); no "
                                         r"checkpoint written"):
        train.main(config(tiny_model, out))
    assert [m["step"] for m in read_metrics(out)] == [1]
    assert (not os.path.exists(os.path.join(out, "latest"))
            and not os.path.exists(os.path.join(out, "checkpoints")))


def test_the_final_checkpoint_is_saved_before_the_final_eval_and_an_eval_failure_never_stops_training(
        tiny_model, tmp_path, monkeypatch):
    """Was: the final eval crashed before the final save: no checkpoint at all."""
    import eval as ev

    out, seen = str(tmp_path / "e"), []

    def broken_benchmarks(*args, **kwargs):
        seen.append(checkpoints(out) if os.path.exists(os.path.join(out, "checkpoints")) else [])
        raise ZeroDivisionError("float division by zero")

    monkeypatch.setattr(ev, "run_benchmarks", broken_benchmarks)
    cfg = config(tiny_model, out, "--steps", "2", "--eval-benchmarks", "arithmetic", "--eval-every", "1")
    log = train.main(cfg)
    assert seen == [[], ["step_000002"]]  # the final eval ran after the final checkpoint was written
    metrics = read_metrics(os.path.dirname(log))
    assert [m["step"] for m in metrics] == [1, 2] and all(m["eval/failed"] == 1.0 for m in metrics)
    assert latest(out) == "step_000002"


def test_no_question_fitting_the_prompt_limit_is_an_error_not_a_hang(tiny_model, tmp_path):
    """Was: "dropping 40 questions", then take() looping forever on an empty list."""
    with pytest.raises(SystemExit, match=r"none of the 40 questions of arithmetic fits --max-prompt-tokens "
                                         r"3: the shortest plain prompt has \d+ tokens"):
        train.main(config(tiny_model, str(tmp_path / "x"), "--max-prompt-tokens", "3"))


def test_duplicate_ids_and_too_few_questions_stop_before_any_model_loads(tmp_path, monkeypatch):
    """Was: different questions merged into one advantage group and one buffer entry."""
    import huggingface_hub.constants
    # loading the hub id would fail fast
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    data = tmp_path / "d.jsonl"
    rows = [{"id": i % 9, "question": f"What is {i} + 1?", "answer": str(i + 1)} for i in range(10)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["--student", "Qwen3.5-0.8B", *ARGS[2:], "--data", str(data), "--out-dir", str(tmp_path / "o")]
    with pytest.raises(ValueError, match=r"d.jsonl:10: duplicate id '0' \(first at .*d.jsonl:1\)"):
        train.main(train.parse_config(args))
    with pytest.raises(SystemExit, match="--questions-per-step 12 is more than the 9 questions"):
        train.main(train.parse_config(args + ["--dedup-ids", "--questions-per-step", "12"]))


def test_a_step_never_holds_a_question_twice_across_passes(tiny_model, tmp_path):
    """Was: at a pass boundary the same question entered one batch twice and its groups merged. 12 questions,
    8 per step: step 2 starts a new pass (the 4 left are skipped), and data/epoch says so."""
    out = str(tmp_path / "ep")
    cfg = config(tiny_model, out, "--steps", "2", "--data-limit", "12", "--no-buffer", "--dump-rollouts")
    train.main(cfg)
    assert [m["data/epoch"] for m in read_metrics(out)] == [0, 1]
    with open(os.path.join(out, "rollouts.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    for step in (1, 2):
        plain = [r["group"] for r in rows if r["step"] == step and r["kind"] == "plain"]
        assert len(plain) == 8 * 4 and all(plain.count(g) == 4 for g in plain)  # 8 groups of 4, none merged


def test_resume_lists_changed_flags_and_applies_the_new_lr(tiny_model, tmp_path):
    """Was: the optimizer kept the old lr while config.json recorded the new one, and nothing was said."""
    out = str(tmp_path / "r")
    train.main(config(tiny_model, out))
    with pytest.warns(UserWarning, match=r"flags differ from the run that wrote .*step_000001: "
                                         r"group_size 4 -> 3, lr 0.001 -> 0.0001$"):
        train.main(train.parse_config(["--student", tiny_model, *ARGS, "--steps", "2", "--resume", out,
                                       "--lr", "1e-4", "--group-size", "3"]))
    state = torch.load(os.path.join(out, "checkpoints", "step_000002", "trainer_state.pt"),
                       weights_only=False)
    assert {g["lr"] for g in state["optimizer"]["param_groups"]} == {1e-4}
    with open(os.path.join(out, "config.json")) as f:
        assert json.load(f)["lr"] == 1e-4


@pytest.mark.parametrize("flag,value,message", [
    ("--questions-per-step", "0", "--questions-per-step 0: must be >= 1"),
    ("--questions-per-step", "-2", "--questions-per-step -2: must be >= 1"),
    ("--group-size", "1", "--group-size 1: must be >= 2"),
    ("--temperature", "0", "--temperature 0.0: must be > 0"),
    ("--tau", "2", "--tau 2.0: must be in \\(0, 1\\]"),
    ("--rho-aug", "1.5", "--rho-aug 1.5: must be in \\[0, 1\\]"),
    ("--micro-batch-size", "0", "--micro-batch-size 0: must be >= 1"),
    ("--gen-batch-size", "0", "--gen-batch-size 0: must be >= 1"),
    ("--steps", "0", "--steps 0: must be >= 1"),
    ("--iters-per-step", "0", "--iters-per-step 0: must be >= 1"),
])
def test_bad_flags_stop_before_anything_loads(tmp_path, flag, value, message):
    """Was: exit 0 with zero work, no learning without a word, a division by zero or a traceback mid-run."""
    with pytest.raises(SystemExit, match=f"cannot start:\n(.*\n)*  {message}"):
        train.main(train.parse_config(["--student", str(tmp_path / "never_loaded"), *ARGS, "--out-dir",
                                       str(tmp_path / "o"), flag, value]))
    assert not os.path.exists(tmp_path / "o")


def test_iters_per_step_above_the_batch_is_clamped_with_a_word(tiny_model, tmp_path):
    with pytest.warns(UserWarning, match="--iters-per-step 100 is more than the 32 plain rollouts .*clamped"):
        train.validate(config(tiny_model, str(tmp_path / "i"), "--iters-per-step", "100"))


def test_bad_bytes_missing_models_and_unreachable_hub_ids_say_what_and_where(tiny_model, tmp_path,
                                                                             monkeypatch):
    """Was: "UnicodeDecodeError ... position 28"; "Repo id must be in the form ..."; a bare hub error."""
    data = tmp_path / "bad.jsonl"
    data.write_bytes(b'{"question": "What is 1 + 1?", "answer": "2"}\n'
                     b'{"question": "caf\xe9?", "answer": "1"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not UTF-8 \(byte 0xe9"):
        train.main(train.parse_config(["--student", tiny_model, *ARGS[2:], "--data", str(data), "--out-dir",
                                       str(tmp_path / "o")]))
    with pytest.raises(SystemExit, match=r"--student path/to/model: no such file or directory \(the student"):
        train.main(train.parse_config(["--student", "path/to/model", *ARGS,
                                       "--out-dir", str(tmp_path / "o")]))
    import huggingface_hub.constants
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # as on a machine with no network
    with pytest.raises(OSError, match=r"--teacher someorg/no-such-model: could not load the teacher "
                                      r"'someorg/no-such-model': tried the hub id "
                                      r"'someorg/no-such-model' \(no such local path\)"):
        train.main(train.parse_config(["--student", tiny_model, *ARGS[2:], "--teacher",
                                       "someorg/no-such-model", "--out-dir", str(tmp_path / "t")]))


def damage(path, how):
    if how == "truncate":
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
    elif how == "garble":
        with open(path, "w") as f:
            f.write("{not json")
    else:
        os.remove(path)


@pytest.mark.parametrize("name,how", [("trainer_state.pt", "truncate"), ("state.json", "garble"),
                                      ("model.safetensors", "delete"), ("model.safetensors", "truncate")])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(tiny_model, tmp_path, name, how):
    """Was: a raw unpickling / JSON traceback, the previous good checkpoint never tried. Also: a half-written
    last metrics line (a crash in the middle of writing it) is dropped."""
    out = str(tmp_path / "d")
    train.main(config(tiny_model, out, "--steps", "2", "--save-every", "1"))
    damage(os.path.join(out, "checkpoints", "step_000002", name), how)
    with open(os.path.join(out, "metrics.jsonl"), "a") as f:
        f.write('{"step": 3, "acc/pla')
    # named explicitly: no guess
    with pytest.raises(ValueError, match=f"damaged checkpoint .*step_000002/{name}"):
        checkpoint.find_checkpoint(os.path.join(out, "checkpoints", "step_000002"))
    with pytest.warns(UserWarning) as caught:
        train.main(config(tiny_model, None, "--steps", "2", "--resume", out))
    said = "\n".join(str(w.message) for w in caught)
    assert f"step_000002/{name}" in said and "resuming from the previous complete one, step_000001" in said
    assert "dropping the half-written last line" in said
    assert [m["step"] for m in read_metrics(out)] == [1, 2]  # step 2 run again from step 1's checkpoint
    assert checkpoint.checkpoint_problem(os.path.join(out, "checkpoints", "step_000002")) is None  # rewritten


# ---------------------------------------------------------------------------------------------------------
# issue 23: run folders that cannot be clobbered or shared, resumes that continue the same run or say why not


def test_a_model_folder_or_the_students_folder_is_never_a_run_folder(tiny_model, tmp_path):
    """Was: exit 0, the model's config.json replaced by the run config; the model no longer loaded."""
    import shutil

    model = str(tmp_path / "model")
    shutil.copytree(tiny_model, model)
    before = read(os.path.join(model, "config.json"))
    for extra in ([], ["--overwrite"]):
        with pytest.raises(SystemExit, match=r"--out-dir .*model: holds files train.py did not write "
                                             r"\(.*config.json.*model.safetensors"):
            train.main(config(tiny_model, model, *extra))
    assert read(os.path.join(model, "config.json")) == before
    with pytest.raises(SystemExit, match=r"--out-dir .*: is the student's folder \(--student"):
        train.main(config(model, model))
    with pytest.raises(SystemExit, match=r"--out-dir .*: holds or is inside the student's folder"):
        train.main(config(os.path.join(model), str(tmp_path)))
    assert sorted(os.listdir(model)) == sorted(os.listdir(tiny_model))


def test_the_demo_never_deletes_a_run_it_did_not_write(tiny_model, tmp_path, monkeypatch):
    """Was: `demo.py --out-dir DIR` deleted the run in DIR/zppo after the primer (it always passes
    --overwrite)."""
    import sys

    import demo

    out = str(tmp_path / "runs")
    train.main(config(tiny_model, os.path.join(out, "zppo")))
    before = sorted(os.listdir(os.path.join(out, "zppo")))
    monkeypatch.setattr(demo, "primed_smollm2", lambda *a, **k: pytest.fail("the primer ran"))
    monkeypatch.setattr(sys, "argv", ["demo.py", "--out-dir", out])
    with pytest.raises(SystemExit, match=r"demo.py: .*runs/zppo holds a run the demo did not write \(student "
                                         r".*\); the demo would delete it: choose another --out-dir"):
        demo.main()
    assert sorted(os.listdir(os.path.join(out, "zppo"))) == before and read_metrics(os.path.join(out, "zppo"))


def test_one_process_per_run_folder_and_a_stale_lock_is_taken_over(tiny_model, tmp_path, monkeypatch):
    """Was: two train.py on one --out-dir both exited 0 with metrics steps 1,1,2,2 and config.json from the
    one, the checkpoint from the other."""
    import subprocess
    import sys

    out = str(tmp_path / "l")
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        os.makedirs(out)
        with open(os.path.join(out, "lock"), "w") as f:
            f.write(f"{live.pid} {__import__('socket').gethostname()}\n")
        for extra in ([], ["--resume", out]):  # a second fresh run, and a --resume of a live run
            with pytest.raises(SystemExit, match=rf"l is locked by a live process, pid {live.pid} "
                                                 r"\(.*lock\): another train.py writes this run"):
                train.main(config(tiny_model, out, *extra))
        assert sorted(os.listdir(out)) == ["lock"]
    finally:
        live.kill()
        live.wait()
    with pytest.warns(UserWarning, match=rf"lock: taking over the stale lock of pid {live.pid} "
                                         r"\(no such process"):
        train.main(config(tiny_model, out))  # the holder died without releasing it (as under kill -9)
    assert not os.path.exists(os.path.join(out, "lock"))  # released at the end
    monkeypatch.setattr(train, "ppo_update", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        train.main(config(tiny_model, None, "--steps", "2", "--resume", out))
    assert not os.path.exists(os.path.join(out, "lock"))  # and on an error


def test_a_full_disk_during_a_save_names_the_path_and_frees_the_partial_checkpoint(tiny_model, tmp_path,
                                                                                  monkeypatch):
    """Was: "RuntimeError: [enforce fail at inline_container.cc:672] unexpected pos ..." with no path, and the
    leftover step_N.tmp kept the disk full so that --resume failed until it was deleted by hand."""
    out = str(tmp_path / "full")
    train.main(config(tiny_model, out, "--steps", "1"))
    os.makedirs(os.path.join(out, "checkpoints", "step_000007.tmp"))  # a partial one of an earlier crash
    real_save = checkpoint.torch.save

    def full_disk(obj, path, *args, **kwargs):
        with open(path, "wb") as f:
            f.write(b"\0" * 1000)
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    monkeypatch.setattr(checkpoint.torch, "save", full_disk)
    with pytest.raises(OSError, match=r"step 2: writing the checkpoint .*step_000002.tmp failed "
                                      r"\(RuntimeError: .*unexpected pos.*\); \d+ MiB are free on its disk "
                                      r"after deleting the partial checkpoint .*latest still names the last "
                                      r"complete checkpoint: free space"):
        train.main(config(tiny_model, None, "--steps", "2", "--resume", out))
    assert checkpoints(out) == ["step_000001"] and latest(out) == "step_000001"  # no .tmp left
    monkeypatch.setattr(checkpoint.torch, "save", real_save)
    train.main(config(tiny_model, None, "--steps", "2", "--resume", out))
    assert checkpoints(out) == ["step_000001", "step_000002"]


def test_a_branch_becomes_the_head_and_every_run_file_is_cut_back_to_it(tiny_model, tmp_path, monkeypatch):
    """Was: after resuming from an older checkpoint and crashing before its first save, `latest` still named
    the abandoned newer checkpoint and the run continued from it (metrics lost steps, kept the discarded
    branch's rows); rows of re-run steps appeared twice in --dump-rollouts / --dump-reformulated."""
    monkeypatch.setattr("reward.grade", parity_grade)  # mixed groups: BCQ/NCQ rows in the dump
    out, dumps = str(tmp_path / "b"), ["--dump-rollouts", "--dump-reformulated"]
    train.main(config(tiny_model, out, "--steps", "2", "--save-every", "1", *dumps))
    real = train.ppo_update

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # killed in the branch's first step, before its first save

    monkeypatch.setattr(train, "ppo_update", crash)
    with pytest.raises(KeyboardInterrupt):
        train.main(config(tiny_model, None, "--steps", "3", *dumps,
                          "--resume", os.path.join(out, "checkpoints", "step_000001")))
    assert latest(out) == "step_000001"  # the branch is the head as soon as it starts
    monkeypatch.setattr(train, "ppo_update", real)
    train.main(config(tiny_model, None, "--steps", "3", *dumps, "--resume", out))
    metrics = read_metrics(out)
    assert [m["step"] for m in metrics] == [1, 2, 3] and latest(out) == "step_000003"
    rows = {}
    for name in ("rollouts.jsonl", "reformulated.jsonl"):
        with open(os.path.join(out, name)) as f:
            rows[name] = [json.loads(line)["step"] for line in f]
    for m in metrics:  # each step's rows once: its sequences, its BCQ/NCQ prompts
        reformulated = m["count/bcq"] + m["count/ncq"]
        assert rows["rollouts.jsonl"].count(m["step"]) == 4 * (m["count/questions"] + reformulated)
        assert rows["reformulated.jsonl"].count(m["step"]) == reformulated


def write_rows(path, answer=lambda i: i + 1, solution=True):
    rows = [{"id": i, "question": f"What is {i} + 1?", "answer": str(answer(i)),
             **({"solution": f"{i} + 1 = {answer(i)}. \\boxed{{{answer(i)}}}"} if solution else {})}
            for i in range(12)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_a_resume_refuses_an_edited_data_file_and_a_finished_run_and_applies_the_buffer_capacity(
        tiny_model, tmp_path, capsys):
    """Was: an edited data file resumed without a word (replayed questions graded against answers no longer in
    the file); `--resume --steps 5` on a run at step 8 did nothing, exit 0, and rewrote config.json to
    steps 5; `--resume --buffer-capacity 2` was listed as changed but the restored capacity won."""
    data, out = tmp_path / "d.jsonl", str(tmp_path / "r")
    args = ["--student", tiny_model, *ARGS[:2], "--data", write_rows(data), *ARGS[6:]]
    train.main(train.parse_config([*args, "--steps", "1", "--out-dir", out]))
    assert len(read_buffer(out, 1)["items"]) > 2  # arithmetic answers from a random model: all hard
    config_before = read(os.path.join(out, "config.json"))
    with pytest.raises(SystemExit, match=r"cannot resume:\n  --steps 1: the run is already at step 1 "
                                         r".*step_000001\), nothing to do; give --steps above 1"):
        train.main(train.parse_config([*args, "--steps", "1", "--resume", out]))
    write_rows(data, answer=lambda i: i + 2)  # edited in place
    with pytest.raises(SystemExit, match=r"--data .*d.jsonl: the data file changed since .*step_000001 was "
                                         r"written \(sha256 \w+ -> \w+\): the buffer and the data position "
                                         r"refer to the rows"):
        train.main(train.parse_config([*args, "--steps", "2", "--resume", out]))
    assert read(os.path.join(out, "config.json")) == config_before  # nothing rewritten
    write_rows(data)  # restored: the same content resumes
    with pytest.warns(UserWarning, match="buffer_capacity 10000 -> 2"):
        train.main(train.parse_config([*args, "--steps", "2", "--resume", out, "--buffer-capacity", "2"]))
    assert "--buffer-capacity 2 replaces the restored buffer's 10000" in capsys.readouterr().out
    assert read_buffer(out, 2)["capacity"] == 2 and len(read_buffer(out, 2)["items"]) <= 2


def read_buffer(out, step):
    with open(os.path.join(out, "checkpoints", f"step_{step:06d}", "state.json")) as f:
        return json.load(f)["buffer"]


def test_a_gold_teacher_on_data_without_solutions_is_an_error(tiny_model, tmp_path):
    """Was: no BCQ ever (count/bcq 0 every step), no warning."""
    data = write_rows(tmp_path / "n.jsonl", solution=False)
    with pytest.raises(SystemExit, match=r"--teacher gold: no question of .*n.jsonl has a `solution` field"):
        train.main(train.parse_config(["--student", tiny_model, *ARGS[:2], "--data", data, *ARGS[6:],
                                       "--steps", "1", "--out-dir", str(tmp_path / "o")]))


def test_an_eval_typo_stops_at_start_and_a_failing_eval_file_is_logged_as_eval_failed(tiny_model, tmp_path):
    """Was: `--eval-benchmarks arithmetc` and an eval file with a bad line only printed `[failed] ...` at the
    end of the run: no eval/failed in metrics (docs/failure.md promises it), the typo not caught at start."""
    with pytest.raises(SystemExit, match=r"--eval-benchmarks arithmetc: unknown 'arithmetc' \(known: "):
        train.main(config(tiny_model, str(tmp_path / "t"), "--eval-benchmarks", "arithmetc"))
    assert not os.path.exists(tmp_path / "t")
    (tmp_path / "gsm8k.jsonl").write_text('{"question": "1 + 1?", "answer": "#### 2"}\n{"question": \n')
    out = str(tmp_path / "e")
    train.main(config(tiny_model, out, "--eval-benchmarks", "gsm8k", "--eval-data-dir", str(tmp_path)))
    assert read_metrics(out)[0]["eval/failed"] == 1.0


def test_a_checkpoint_missing_or_with_a_cut_tokenizer_template_or_config_file_is_damaged(tiny_model,
                                                                                        tmp_path):
    """Was: raw transformers errors without the path and no fallback to the previous checkpoint; with
    tokenizer_config.json removed the run resumed silently with another eos token."""
    import shutil

    out = str(tmp_path / "t")
    train.main(config(tiny_model, out, "--steps", "2", "--save-every", "1"))
    newest = os.path.join(out, "checkpoints", "step_000002")
    names = set(os.listdir(newest))
    assert {"tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "config.json"} <= names
    for name, how in [("tokenizer.json", "truncate"), ("tokenizer.json", "delete"),
                      ("chat_template.jinja", "delete"), ("config.json", "truncate"),
                      ("tokenizer_config.json", "delete")]:
        copy = str(tmp_path / "copy")
        shutil.copytree(newest, copy)
        damage(os.path.join(copy, name), how)
        assert checkpoint.checkpoint_problem(copy).startswith(os.path.join(copy, name)), (name, how)
        shutil.rmtree(copy)
    assert checkpoint.checkpoint_problem(newest) is None
    damage(os.path.join(newest, "tokenizer_config.json"), "delete")
    with pytest.warns(UserWarning, match=r"step_000002/tokenizer_config.json: missing\); resuming from the "
                                         r"previous complete one, step_000001"):
        train.main(config(tiny_model, None, "--steps", "2", "--resume", out))
    assert checkpoint.checkpoint_problem(newest) is None  # step 2 written again
