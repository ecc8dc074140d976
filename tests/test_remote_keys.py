"""A teacher or judge server that needs an API key, against a local stub on 127.0.0.1 that refuses (401) any
request without the right key: the key from OPENAI_API_KEY or a named variable, from the URL's user part,
or in the query string, always sent, and never written to a message, config.json, a checkpoint, a tracker,
eval.py's outputs or the console."""
import json
import os
import subprocess
import sys
import urllib.parse
from http.server import BaseHTTPRequestHandler

import pytest

from conftest import ROOT, serve, stop
from engines.server import RemoteEngine
from test_train import ARGS

KEY = "sk-test-7f3a9c1e5b"  # the key the stub accepts (a bearer token, or ?key= in the query)
QKEY = "qk-test-4d2b8e6a0c"  # a second secret, only ever in a query string
WRONG = "sk-wrong-1b9d7f"


class KeyStub:
    """An OpenAI-compatible server that answers only requests bearing KEY (Authorization: Bearer, or a
    `key` query parameter) and answers 401 otherwise, echoing what it was given (some servers do)."""

    def __init__(self):
        self.seen = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                given = self.headers.get("Authorization")
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                stub.seen.append({"path": self.path, "authorization": given, "host": self.headers["Host"]})
                if given != f"Bearer {KEY}" and query.get("key") != [KEY]:
                    return self.reply(401, json.dumps({"error": f"invalid api key {given}"}).encode())
                if urllib.parse.urlsplit(self.path).path != "/v1/chat/completions":
                    return self.reply(404, b'{"error": "not found"}')
                prompt = body["messages"][-1]["content"]
                text = ('{"verdict": "correct"}' if str(prompt).startswith("You are an expert judge")
                        else f"{prompt} \\boxed{{7}}")
                choices = [{"index": i, "message": {"role": "assistant", "content": text},
                            "finish_reason": "stop"} for i in range(body["n"])]
                self.reply(200, json.dumps({"choices": choices}).encode())

            def reply(self, code, payload):
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server, self.url = serve(Handler)
        self.port = self.server.server_address[1]


@pytest.fixture
def keyed(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    server = KeyStub()
    yield server
    stop(server.server)


def engine(url, **kw):
    return RemoteEngine(url, "teacher-model", **{"timeout": 5, "retries": 0, "backoff": 0.01, **kw})


def works(e, stub):
    """One start check and one request through `e`, both answered."""
    e.check()
    (group,) = e.generate(["q"], n=1)
    assert group and group[0].text == "q \\boxed{7}"
    return stub.seen[-1]


def test_the_key_in_openai_api_key_is_sent_as_a_bearer_token(keyed, monkeypatch):
    """Was: no key sent at all; the server's 401 blamed on the URL."""
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    assert works(engine(keyed.url), keyed)["authorization"] == f"Bearer {KEY}"


def test_a_named_variable_holds_the_key(keyed, monkeypatch):
    monkeypatch.setenv("MY_TEACHER_KEY", KEY)
    monkeypatch.setenv("OPENAI_API_KEY", WRONG)  # the variable named wins over the default one
    assert works(engine(keyed.url, api_key_env="MY_TEACHER_KEY"), keyed)["authorization"] == f"Bearer {KEY}"
    monkeypatch.setenv("MY_TEACHER_KEY", f"  {KEY}\n")  # a key pasted with a newline is still the key
    assert works(engine(keyed.url, api_key_env="MY_TEACHER_KEY"), keyed)["authorization"] == f"Bearer {KEY}"
    with pytest.raises(ValueError, match=r"MISSING_KEY_VAR.* is not set") as err:
        engine(keyed.url, api_key_env="MISSING_KEY_VAR")
    assert WRONG not in str(err.value)
    monkeypatch.setenv("BAD_KEY_VAR", "sk-a\r\nX-Injected: 1")  # no header injection, no key in the error
    with pytest.raises(ValueError, match=r"BAD_KEY_VAR holds characters an HTTP header cannot carry") as err:
        engine(keyed.url, api_key_env="BAD_KEY_VAR")
    assert "sk-a" not in str(err.value)


@pytest.mark.parametrize("userinfo", [KEY, f"user:{KEY}", f":{KEY}"])
@pytest.mark.parametrize("path", ["", "/v1", "/v1/chat/completions"])
def test_a_key_in_the_urls_user_part_is_sent_as_a_bearer_token_and_never_shown(keyed, userinfo, path):
    """Was: the user part was dropped silently (no key sent) and the URL with the key was echoed in every
    message."""
    e = engine(f"http://{userinfo}@127.0.0.1:{keyed.port}{path}")
    seen = works(e, keyed)
    assert seen["authorization"] == f"Bearer {KEY}" and seen["path"] == "/v1/chat/completions"
    assert seen["host"] == f"127.0.0.1:{keyed.port}"
    assert KEY not in e.url and KEY not in e.shown


def test_a_percent_encoded_key_in_the_user_part_is_sent_decoded(keyed):
    special = "sk-a/b:c@d+e%"
    e = engine(f"http://u:{urllib.parse.quote(special, safe='')}@127.0.0.1:{keyed.port}")
    with pytest.raises(OSError, match="refused the API key") as err:
        e.check()  # the stub wants KEY: refused, but what was sent is the decoded key
    assert keyed.seen[-1]["authorization"] == f"Bearer {special}"
    assert "sk-a" not in str(err.value) and "the URL's user part" in str(err.value)


@pytest.mark.parametrize("path", ["", "/", "/v1", "/v1/", "/v1/chat/completions"])
def test_a_query_string_is_kept_and_sent_as_it_is(keyed, path):
    """Was: `?key=` in the URL became http://host/v1?key=K/v1/chat/completions (404), and the key was written
    to config.json, every state.json and the trackers."""
    e = engine(f"{keyed.url}{path}?api-version=2024-06-01&key={KEY}")
    seen = works(e, keyed)
    assert seen["path"] == f"/v1/chat/completions?api-version=2024-06-01&key={KEY}"
    assert seen["authorization"] is None  # no key in the environment: the query's key alone
    assert KEY not in e.shown and e.shown.endswith("/v1/chat/completions?api-version=***&key=***")


def test_a_refused_key_says_which_variable_to_set_and_never_blames_the_url(keyed, monkeypatch):
    """Was: `answered 401 ... check the URL (the server's root or its /v1)` whatever the key."""
    with pytest.raises(OSError, match=r"refused the API key \(401\).*no key was sent: OPENAI_API_KEY is not "
                                      r"set") as err:
        engine(keyed.url).check()
    assert "check the URL" not in str(err.value)
    monkeypatch.setenv("OPENAI_API_KEY", WRONG)
    with pytest.raises(OSError, match=r"refused the API key \(401\).*OPENAI_API_KEY \(set\)") as err:
        engine(keyed.url).check()
    assert WRONG not in str(err.value) and "check the URL" not in str(err.value)  # the server echoed it
    monkeypatch.setenv("JUDGE_KEY", WRONG)
    with pytest.raises(OSError, match=r"JUDGE_KEY \(set\)") as err:
        engine(keyed.url, api_key_env="JUDGE_KEY").check()
    assert WRONG not in str(err.value)
    with pytest.raises(OSError, match=r"the key in the URL's user part") as err:
        engine(f"http://{WRONG}@127.0.0.1:{keyed.port}/v1").check()
    assert WRONG not in str(err.value)
    # mid-run (the key revoked after the start check): each request counted, not retried, said once
    e = engine(keyed.url, retries=2)
    with pytest.warns(UserWarning, match=r"refused the API key \(401\)") as caught:
        assert e.generate(["a", "b"]) == [[], []]
    assert e.failures == 2 and len(keyed.seen) == 4 + 2
    assert sum("refused" in str(w.message) for w in caught) == 1
    assert all(WRONG not in str(w.message) for w in caught)


def _files_hold(folder, secrets):
    """Every (file, secret) where a file under folder holds a secret, bytes compared."""
    found = []
    for root, _, names in os.walk(folder):
        for name in names:
            with open(os.path.join(root, name), "rb") as f:
                data = f.read()
            found += [(os.path.join(root, name), s) for s in secrets if s.encode() in data]
    return found


def test_a_training_run_sends_the_key_and_writes_it_nowhere(tiny_model, tmp_path, keyed):
    """The key in the URL's user part and a second one in its query string: the teacher is asked with them,
    and neither reaches config.json, a checkpoint's state.json, metrics or the console; a resume with the key
    in a named variable instead lists the changed flags without either."""
    out = str(tmp_path / "run")
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    base = [sys.executable, "train.py", "--student", tiny_model, *ARGS[2:], "--teacher", "t",
            "--teacher-timeout", "5", "--teacher-retries", "0", "--save-every", "1"]
    first = subprocess.run(base + ["--teacher-url", f"http://teacher:{KEY}@127.0.0.1:{keyed.port}/v1?key={QKEY}",
                                   "--steps", "1", "--out-dir", out],
                           cwd=ROOT, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert first.returncode == 0, first.stderr[-3000:]
    asked = len(keyed.seen)
    assert asked > 1 and all(s["authorization"] == f"Bearer {KEY}" for s in keyed.seen)
    with open(os.path.join(out, "config.json")) as f:
        assert json.load(f)["teacher_url"] == f"http://***@127.0.0.1:{keyed.port}/v1?key=***"
    second = subprocess.run(base + ["--teacher-url", f"{keyed.url}/v1?key={QKEY}", "--teacher-api-key-env",
                                    "ZPPO_TEST_TEACHER_KEY", "--steps", "2", "--resume", out],
                            cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
                            env={**env, "ZPPO_TEST_TEACHER_KEY": KEY})
    assert second.returncode == 0, second.stderr[-3000:]
    assert len(keyed.seen) > asked and all(s["authorization"] == f"Bearer {KEY}" for s in keyed.seen)
    assert "teacher_api_key_env None -> 'ZPPO_TEST_TEACHER_KEY'" in second.stderr  # the name, never the value
    assert f"teacher_url 'http://***@127.0.0.1:{keyed.port}/v1?key=***' -> " \
           f"'http://127.0.0.1:{keyed.port}/v1?key=***'" in second.stderr
    with open(os.path.join(out, "checkpoints", "step_000002", "state.json")) as f:
        assert json.load(f)["config"]["teacher_api_key_env"] == "ZPPO_TEST_TEACHER_KEY"
    # the URL is not given again: its recorded form has no key to send, so the resume stops and says why
    third = subprocess.run(base + ["--steps", "3", "--resume", out], cwd=ROOT, capture_output=True, text=True,
                           env=env, timeout=300, check=False)
    assert third.returncode != 0 and "cannot resume: the run's --teacher-url carried a key, which is never " \
        f"written (http://127.0.0.1:{keyed.port}/v1?key=***): give --teacher-url again" in third.stderr
    for res in (first, second, third):
        assert KEY not in res.stdout + res.stderr and QKEY not in res.stdout + res.stderr
    assert _files_hold(out, [KEY, QKEY]) == []


def test_trackers_get_the_config_without_the_key(tmp_path):
    """accelerate's trackers are given the run's config: the URL reaches them redacted (a tracker of its
    own here, through accelerate's real init_trackers; none of wandb, tensorboard, ... is installed)."""
    from accelerate import Accelerator
    from accelerate.tracking import GeneralTracker

    import checkpoint
    from config import Config

    got = {}

    class Recorder(GeneralTracker):
        name, requires_logging_directory = "recorder", False

        def __init__(self):
            super().__init__()

        @property
        def tracker(self):
            return self

        def store_init_configuration(self, values):
            got.update(values)

        def log(self, values, step=None, **kwargs):
            pass

    cfg = Config(teacher="t", teacher_url=f"https://user:{KEY}@gateway.example/openai/v1?key={QKEY}",
                 out_dir=str(tmp_path), report_to="recorder")
    checkpoint.open_run(cfg, 0, Accelerator(log_with=[Recorder()], cpu=True))
    assert got["teacher_url"] == "https://***@gateway.example/openai/v1?key=***"
    assert _files_hold(tmp_path, [KEY, QKEY]) == []
    assert KEY not in json.dumps(got) and QKEY not in json.dumps(got)


def test_eval_sends_the_judge_its_key_and_writes_it_nowhere(tiny_model, tmp_path, keyed):
    """eval.py with a judge behind a key: its results (the `config` section), responses, samples, the row
    cache and the console never hold the key; without a key the start check says which variable to set,
    before the model loads."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "math500.jsonl").write_text("".join(
        json.dumps({"problem": f"Describe f{i}.", "answer": "it is strictly increasing"}) + "\n"
        for i in range(2)))
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}

    def run(url, *extra, environ=env):
        return subprocess.run(
            [sys.executable, "eval.py", "--model", tiny_model, "--benchmarks", "math500", "--data-dir",
             str(tmp_path / "data"), "--max-new-tokens", "4", "--judge", "j", "--judge-url", url,
             "--judge-timeout", "5", "--judge-retries", "0", "--out", str(tmp_path / "out" / "res.json"),
             "--responses", str(tmp_path / "out" / "responses.jsonl"), "--log-samples",
             "--cache-dir", str(tmp_path / "out" / "cache"), *extra],
            cwd=ROOT, capture_output=True, text=True, env={**environ, "HF_HUB_OFFLINE": "1"}, timeout=300,
            check=False)

    (tmp_path / "out").mkdir()
    res = run(f"http://{KEY}@127.0.0.1:{keyed.port}/v1?key={QKEY}")
    assert res.returncode == 0, res.stderr[-3000:]
    assert keyed.seen and all(s["authorization"] == f"Bearer {KEY}" for s in keyed.seen)
    with open(tmp_path / "out" / "res.json") as f:
        results = json.load(f)
    assert results["config"]["eval_py"]["judge_url"] == f"http://***@127.0.0.1:{keyed.port}/v1?key=***"
    assert results["benchmarks"]["math500"]["judge_failed"] == 0
    res_named = run(keyed.url, "--judge-api-key-env", "ZPPO_TEST_JUDGE_KEY", "--no-cache",
                    environ={**env, "ZPPO_TEST_JUDGE_KEY": KEY})
    assert res_named.returncode == 0, res_named.stderr[-3000:]
    with open(tmp_path / "out" / "res.json") as f:
        assert json.load(f)["config"]["eval_py"]["judge_api_key_env"] == "ZPPO_TEST_JUDGE_KEY"
    refused = run(keyed.url)
    assert refused.returncode != 0
    assert "refused the API key (401)" in refused.stderr and "OPENAI_API_KEY is not set" in refused.stderr
    assert "Loading weights" not in refused.stderr  # said before the model loads
    for r in (res, res_named, refused):
        assert KEY not in r.stdout + r.stderr and QKEY not in r.stdout + r.stderr
    assert _files_hold(tmp_path / "out", [KEY, QKEY]) == []


def test_a_study_records_train_py_flags_without_the_key(tmp_path, monkeypatch):
    """compare.py passes unknown flags on to train.py and records them (study.json, results.json's command
    and settings): a --teacher-url there is recorded redacted, and a rerun with the same URL is the same
    study."""
    from scripts import compare

    url = f"http://t:{KEY}@127.0.0.1:1/v1?key={QKEY}"
    argv = ["--smoke", "--out-dir", str(tmp_path / "s"), "--teacher", "t", f"--teacher-url={url}",
            "--teacher-api-key-env", "X"]
    args = compare.parse_args(argv)
    assert args.train_extra[:3] == ["--teacher", "t", f"--teacher-url={url}"]  # what train.py gets, whole
    os.makedirs(args.out_dir)
    compare.check_study(args)
    compare.check_study(compare.parse_args(argv))  # the same study: no "other settings"
    monkeypatch.setattr(sys, "argv", ["scripts/compare.py", *argv])
    out = compare.summarize(args, {}, {}, {}, {})
    recorded = json.dumps(out)
    assert "--teacher-url=http://***@127.0.0.1:1/v1?key=***" in recorded
    assert KEY not in recorded and QKEY not in recorded and _files_hold(tmp_path, [KEY, QKEY]) == []


def test_a_named_key_variable_that_is_not_set_stops_train_py_before_any_model_loads(tiny_model, tmp_path,
                                                                                    keyed, monkeypatch):
    import train

    monkeypatch.delenv("ZPPO_UNSET_KEY", raising=False)
    cfg = train.parse_config(["--student", tiny_model, *ARGS[2:], "--teacher", "t", "--teacher-url",
                              keyed.url, "--teacher-api-key-env", "ZPPO_UNSET_KEY", "--out-dir",
                              str(tmp_path / "o")])
    with pytest.raises(SystemExit, match=r"--teacher-api-key-env ZPPO_UNSET_KEY: no such environment "
                                         r"variable is set \(export it with the teacher server's API key\)"):
        train.main(cfg)
    assert keyed.seen == []  # stopped before the start check, before the student loaded
