"""The remote teacher against a local OpenAI-compatible stub server on 127.0.0.1 (started here, stopped
here, bounded): normal answers, a slow answer hitting the timeout, a 500 then success, malformed JSON,
the concurrency cap, and a failing teacher costing BCQ but not the run."""
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler

import pytest

import train
from conftest import serve, stop
from engines.server import RemoteEngine
from test_train import ARGS, read_metrics

# replies that are no well-formed completion of the requested shape, each a prompt of its own
HOSTILE = {p: p for p in ("badstatus", "cut", "nested", "number", "list", "many", "none", "long", "drip",
                          "huge")}


def hostile(handler, how, body):
    """Write one hostile reply straight to the socket (no well-behaved HTTP where the case is about HTTP)."""
    handler.close_connection = True
    w = handler.wfile
    def choice(text):
        return {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}

    payload = {"nested": b'{"choices": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
               "number": json.dumps({"choices": [choice(7)] * body["n"]}).encode(),
               "list": json.dumps({"choices": [choice(["a", "b"])] * body["n"]}).encode(),
               "many": json.dumps({"choices": [choice("x \\boxed{7}")] * 5000}).encode(),
               "none": b'{"choices": []}',
               "long": json.dumps({"choices": [choice("word " * 20_000)] * body["n"]}).encode(),
               "huge": b'{"choices": [], "pad": "' + b"x" * (64 << 20) + b'"}'}.get(how, b"{}")
    try:
        if how == "badstatus":
            w.write(b"HTTP/1.1 TWO-HUNDRED\r\n\r\n")
            return
        w.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
        if how in ("cut", "drip"):
            w.write(b"Content-Length: 4000\r\n\r\n")
            for _ in range(200 if how == "drip" else 1):  # drip: a byte every 20 ms, for at most 4 s
                w.write(b" ")
                w.flush()
                time.sleep(0.02 if how == "drip" else 0)
            return
        w.write(f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the client gave up, as it should


class Stub:
    """Behaviour is chosen by the prompt text: 'slow' (or the model 'slow-teacher'), 'flaky' (one 500 then
    fine), 'garbage' (not JSON), 'reject' (400); anything else answers normally with n choices echoing it."""

    def __init__(self):
        self.requests, self.in_flight, self.max_in_flight = [], 0, 0
        self.lock, self.flaky_seen = threading.Lock(), set()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                prompt = body["messages"][-1]["content"]
                if self.path != "/v1/chat/completions":
                    return self.reply(404, b'{"error": "not found"}')
                if prompt in HOSTILE or body["model"] == "cut-teacher" and len(stub.requests) % 3 == 2:
                    with stub.lock:
                        stub.requests.append(body)
                    return hostile(self, HOSTILE.get(prompt, "cut"), body)
                with stub.lock:
                    stub.requests.append(body)
                    stub.in_flight += 1
                    stub.max_in_flight = max(stub.max_in_flight, stub.in_flight)
                try:
                    time.sleep(0.05)
                    if prompt.startswith("slow") or body["model"] == "slow-teacher":
                        time.sleep(1.0)
                    if prompt.startswith("reject"):
                        return self.reply(400, b'{"error": "bad request"}')
                    if prompt.startswith("flaky") and prompt not in stub.flaky_seen:
                        stub.flaky_seen.add(prompt)
                        return self.reply(500, b'{"error": "overloaded"}')
                    if prompt.startswith("garbage"):
                        return self.reply(200, b"<html>not json")
                    content = ('{"verdict": "correct"}' if prompt.startswith("You are an expert judge")
                               else None)
                    choices = [{"index": i, "message": {"role": "assistant",
                                                        "content": content or f"{prompt} #{i} \\boxed{{7}}"},
                                "finish_reason": "stop"} for i in range(body["n"])]
                    self.reply(200, json.dumps({"choices": choices}).encode())
                finally:
                    with stub.lock:
                        stub.in_flight -= 1

            def reply(self, code, payload):
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                try:
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout under test)

        self.server, self.url = serve(Handler)


@pytest.fixture
def stub():
    server = Stub()
    yield server
    stop(server.server)


def engine(stub, **kw):
    return RemoteEngine(stub.url, "teacher-model", **{"timeout": 0.5, "retries": 2, "backoff": 0.01, **kw})


def test_normal_answers_and_sampling_parameters(stub):
    out = engine(stub).generate(["q1", "q2"], n=3, max_new_tokens=50, temperature=0.7, top_p=0.9, top_k=20,
                                presence_penalty=1.5)
    assert [[r.text for r in g] for g in out] == [[f"q{j} #{i} \\boxed{{7}}" for i in range(3)]
                                                  for j in (1, 2)]
    req = stub.requests[0]
    assert (req["model"] == "teacher-model"
            and req["messages"] == [{"role": "user", "content": req["messages"][0]["content"]}])
    assert {k: req[k] for k in ("n", "max_tokens", "temperature", "top_p", "top_k", "min_p",
                                "presence_penalty")} == \
        {"n": 3, "max_tokens": 50, "temperature": 0.7, "top_p": 0.9, "top_k": 20, "min_p": 0.0,
         "presence_penalty": 1.5}
    assert engine(stub).generate(["q"], top_k=0)[0] and stub.requests[-1]["top_k"] == -1  # 0 = off, vLLM's -1
    assert req["repetition_penalty"] == 1.0  # min-p and the repetition penalty sent always, off: the server's
    # checkpoint defaults never apply


def test_a_conversation_goes_as_the_chat_it_is(stub):
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "and now?"}]
    (group,) = engine(stub).generate([chat], n=1)
    assert stub.requests[0]["messages"] == chat and group[0].text.startswith("and now?")


def test_slow_answer_times_out_and_costs_only_that_prompt(stub):
    e = engine(stub, retries=1)
    start = time.perf_counter()
    out = e.generate(["slow one", "fine"], n=1)
    assert out[0] == [] and len(out[1]) == 1 and e.failures == 1
    assert time.perf_counter() - start < 5  # two timeouts of 0.5 s, not the 1 s the server takes each time


def test_server_error_is_retried(stub):
    e = engine(stub)
    out = e.generate(["flaky q"], n=2)
    assert len(out[0]) == 2 and e.failures == 0
    assert sum(r["messages"][0]["content"] == "flaky q" for r in stub.requests) == 2


def test_malformed_json_is_retried_then_given_up(stub):
    e = engine(stub, retries=2)
    assert e.generate(["garbage q"])[0] == [] and e.failures == 1
    assert len(stub.requests) == 3  # the first try and two retries


def test_client_errors_are_not_retried(stub):
    e = engine(stub)
    assert e.generate(["reject q"])[0] == [] and len(stub.requests) == 1


def test_concurrency_cap(stub):
    out = engine(stub, concurrency=3).generate([f"p{i}" for i in range(12)])
    assert all(len(g) == 1 for g in out) and stub.max_in_flight <= 3
    assert [g[0].text.split(" #")[0] for g in out] == [f"p{i}" for i in range(12)]  # order kept


def test_unreachable_server_fails_softly():
    e = RemoteEngine("http://127.0.0.1:9", "m", timeout=0.2, retries=1, backoff=0.01)
    assert e.generate(["q"]) == [[]] and e.failures == 1


def test_training_with_a_failing_remote_teacher_loses_bcq_not_the_run(tiny_model, tmp_path, stub,
                                                                       monkeypatch):
    monkeypatch.setattr("reward.grade", lambda text, gold: 0.0)  # all hard, so the cap is filled
    out = str(tmp_path / "r")
    cfg = train.parse_config(["--student", tiny_model, *ARGS[2:], "--teacher", "slow-teacher",
                              "--teacher-url", stub.url, "--teacher-timeout", "0.3", "--teacher-retries", "0",
                              "--steps", "1", "--out-dir", out])
    train.main(cfg)
    (m,) = read_metrics(out)
    assert m["count/teacher_failed"] > 0 and m["count/bcq"] == 0 and m["count/ncq"] == 2
    assert os.path.exists(os.path.join(out, "checkpoints", "step_000001", "model.safetensors"))


def test_free_form_gold_answers_are_judged_by_the_teacher_during_training(tiny_model, tmp_path, stub):
    data = tmp_path / "prose.jsonl"
    data.write_text("".join(json.dumps({"question": f"Describe f{i}.", "answer": "it is strictly increasing"})
                            + "\n" for i in range(8)))
    out = str(tmp_path / "j")
    cfg = train.parse_config(["--student", tiny_model, "--teacher", "judge-model", "--teacher-url", stub.url,
                              "--data", str(data), "--questions-per-step", "8", "--group-size", "2",
                              "--max-new-tokens", "4", "--steps", "1", "--out-dir", out])
    train.main(cfg)
    (m,) = read_metrics(out)
    judged = [r for r in stub.requests if r["messages"][0]["content"].startswith("You are an expert judge")]
    assert len(judged) == 16 and all(r["temperature"] == 0.0 and r["max_tokens"] == 512 for r in judged)
    # a verdict within 512 tokens: the judge's chat template does not think (--helper-thinking off)
    assert all(r["chat_template_kwargs"] == {"enable_thinking": False} for r in judged)
    assert m["acc/plain"] == 1.0 and m["count/hard"] == 0  # the judge said correct to every rollout


@pytest.mark.parametrize("choice", ["off", "on", "template"])
def test_the_teacher_s_short_calls_set_the_thinking_switch_and_its_rollouts_do_not(tiny_model, tmp_path, stub,
                                                                                   monkeypatch, choice):
    """Qwen3.5 thinks by default: a compression (512 tokens) or a verdict could be all thinking. The
    compression calls carry --helper-thinking's switch to the server (vLLM's chat_template_kwargs); the
    teacher's own rollouts on hard questions carry none, so its template decides."""
    monkeypatch.setattr(train, "score_rollouts", lambda groups, examples, judge=None: [[0.0] * len(g)
                                                                                    for g in groups])
    out = str(tmp_path / choice)  # every rollout wrong: all hard, teacher rollouts, NCQs of compressed ones
    train.main(train.parse_config(["--student", tiny_model, *ARGS[2:], "--teacher", "t", "--teacher-url",
                                   stub.url, "--steps", "1", "--helper-thinking", choice, "--out-dir", out]))
    compressed = [r for r in stub.requests if r["messages"][0]["content"].startswith("Compress the response")]
    rollouts = [r for r in stub.requests if r["n"] > 1]  # the teacher's G_T rollouts per hard question
    assert compressed and rollouts and read_metrics(out)[0]["count/ncq"] > 0
    want = {"off": {"enable_thinking": False}, "on": {"enable_thinking": True}, "template": None}[choice]
    assert all(r.get("chat_template_kwargs") == want for r in compressed)
    assert all("chat_template_kwargs" not in r for r in rollouts)


@pytest.mark.parametrize("how", sorted(HOSTILE))
def test_a_hostile_reply_is_one_failed_request_retried_never_an_exception(stub, how):
    """Was: BadStatusLine, IncompleteRead, RecursionError, TypeError in the grader (the run died); 5,000
    choices used for 2 asked, a reply 20x max_tokens long used, an empty reply not counted; a slow sender took
    42 s for a 2 s timeout. Each is now one failed attempt, retried, then one counted failure; the drip within
    the timeout."""
    e = engine(stub, retries=1, timeout=0.5)
    start = time.perf_counter()
    assert e.generate([how], n=2, max_new_tokens=10) == [[]] and e.failures == 1 and e.prompts == 1
    assert len(stub.requests) == 2  # retried once
    # two attempts of at most 0.5 s each (the drip takes 4 s per reply)
    assert time.perf_counter() - start < 3
    assert engine(stub).generate(["fine"], n=2, max_new_tokens=10)[0][1].text == "fine #1 \\boxed{7}"


def test_a_configuration_that_cannot_work_is_caught_at_start(tiny_model, tmp_path, stub):
    """Was: a URL without a scheme or with a wrong path failed every request (404, not retried) and the run
    trained without a teacher, exit 0, nothing said."""
    base = ["--student", tiny_model, *ARGS[2:], "--teacher", "t", "--steps", "1",
            "--out-dir", str(tmp_path / "o")]
    with pytest.raises(SystemExit, match=r"--teacher-url 127.0.0.1:8000: not an http:// or https:// URL "
                                         r"with a host \(e.g. http://127.0.0.1:8000\)"):
        train.main(train.parse_config(base + ["--teacher-url", "127.0.0.1:8000"]))
    with pytest.raises(OSError, match=r"--teacher t: .*/wrong/chat/completions answered "
                                      r"404 to a test request for the model 't'"):
        train.main(train.parse_config(base + ["--teacher-url", stub.url + "/wrong"]))
    with pytest.raises(OSError, match=r"--teacher t: no server answers at http://127.0.0.1:9/v1/chat"
                                      r"/completions \(ConnectionRefusedError"):
        train.main(train.parse_config(base + ["--teacher-url", "http://127.0.0.1:9",
                                              "--teacher-timeout", "1"]))
    assert not os.path.exists(tmp_path / "o" / "metrics.jsonl")


def test_a_teacher_that_fails_every_request_of_a_step_says_so_and_one_that_cuts_replies_costs_no_run(
        tiny_model, tmp_path, stub, monkeypatch):
    """Was: a body cut short mid-run (IncompleteRead) killed the run in step 2 before any checkpoint."""
    monkeypatch.setattr("reward.grade", lambda text, gold: 0.0)  # all hard: the teacher is asked
    base = ["--student", tiny_model, *ARGS[2:], "--teacher-timeout", "0.3", "--teacher-retries", "0"]
    out = str(tmp_path / "cut")
    train.main(train.parse_config(base + ["--teacher", "cut-teacher", "--teacher-url", stub.url,
                                          "--steps", "2", "--out-dir", out]))
    assert [m["step"] for m in read_metrics(out)] == [1, 2] and sum(m["count/teacher_failed"] for m in
                                                                    read_metrics(out)) > 0
    with pytest.warns(UserWarning, match=r"step 1: every one of the \d+ requests to the teacher at .* failed "
                                         r"\(count/teacher_failed\)"):
        train.main(train.parse_config(base + ["--teacher", "slow-teacher", "--teacher-url", stub.url,
                                              "--steps", "1", "--out-dir", str(tmp_path / "slow")]))


def test_eval_s_judge_calls_do_not_think_unless_asked(tiny_model, tmp_path, stub):
    """eval.py --judge-thinking (default off): every judge request carries the switch; `template` sends
    none (the server's template decides)."""
    import eval as ev

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "math500.jsonl").write_text("".join(  # prose answers: every response is judged
        json.dumps({"problem": f"Describe f{i}.", "answer": "it is strictly increasing"}) + "\n"
        for i in range(3)))
    for choice, want in (("off", {"enable_thinking": False}), ("template", None)):
        stub.requests.clear()
        ev.main(ev.EvalConfig(model=tiny_model, benchmarks="math500", data_dir=str(tmp_path / "data"),
                              max_new_tokens=4, judge="j", judge_url=stub.url, judge_thinking=choice,
                              out=str(tmp_path / f"{choice}.json"), cache=False))
        judged = [r for r in stub.requests if r["messages"][0]["content"] != "Say OK."]
        assert len(judged) == 3 and all(r.get("chat_template_kwargs") == want for r in judged), choice
