"""The remote engine's HTTP as OpenAI clients behave, against servers on 127.0.0.1 started here: every form
of base URL reaches the server's chat completions, and the whole-request deadline holds whatever the server
does with the connection after its headers (stall, trickle, a chunked body that never ends, a Content-Length
never filled; the connection kept or to be closed)."""
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler

import pytest

from conftest import serve, stop
from engines.server import RemoteEngine


class PathStub:
    """Answers every POST with one completion, recording the path (and query) it was sent to."""

    def __init__(self):
        self.paths = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stub.paths.append(self.path)
                choices = [{"index": 0, "message": {"role": "assistant", "content": "ok \\boxed{7}"},
                            "finish_reason": "stop"}] * body["n"]
                payload = json.dumps({"choices": choices}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server, self.url = serve(Handler)


@pytest.fixture
def paths():
    stub = PathStub()
    yield stub
    stop(stub.server)


# (what follows the host in --teacher-url / --judge-url, the path the server must get)
URL_FORMS = [
    ("", "/v1/chat/completions"),  # the server's root: the project's form
    ("/", "/v1/chat/completions"),
    ("/v1", "/v1/chat/completions"),  # an OpenAI base URL: base_url + /chat/completions
    ("/v1/", "/v1/chat/completions"),
    ("/openai/v1", "/openai/v1/chat/completions"),  # a gateway's base URL under a prefix
    ("/openai/v1/", "/openai/v1/chat/completions"),
    ("/api/v2", "/api/v2/chat/completions"),
    ("/v1/chat/completions", "/v1/chat/completions"),  # the full endpoint, as it is
    ("/v1/chat/completions/", "/v1/chat/completions"),
    ("/openai/v1?api-version=2024-06-01", "/openai/v1/chat/completions?api-version=2024-06-01"),
    ("?api-version=1", "/v1/chat/completions?api-version=1"),
    ("/v1/?a=1&b=2", "/v1/chat/completions?a=1&b=2"),
    ("/v1/chat/completions?a=1", "/v1/chat/completions?a=1"),
    ("/v1#part", "/v1/chat/completions"),  # a fragment is never sent
]


@pytest.mark.parametrize(("tail", "sent"), URL_FORMS)
def test_every_base_url_form_reaches_chat_completions(paths, tail, sent):
    """Was: http://host:8000/v1 (the form every OpenAI client takes) became /v1/v1/chat/completions, a 404;
    a query string ended up inside the path."""
    e = RemoteEngine(paths.url + tail, "m", timeout=5, retries=0)
    e.check()
    assert e.generate(["q"])[0][0].text == "ok \\boxed{7}"
    assert paths.paths == [sent, sent] and e.url == paths.url + sent


class RawServer:
    """A TCP server that reads one request and answers with `behaviour` (raw bytes and pauses), until the
    client hangs up or the test ends."""

    def __init__(self, behaviour):
        self.behaviour, self.stop = behaviour, threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.answer, args=(conn,), daemon=True).start()

    def answer(self, conn):
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, body = data.split(b"\r\n\r\n", 1)
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))
            while len(body) < length:
                body += conn.recv(65536)
            try:
                self.behaviour(conn, self.stop)
            except OSError:
                pass  # the client gave up, as it should

    def close(self):
        self.stop.set()
        self.sock.close()


def trickle(conn, stop, piece, every=0.05):
    """`piece` every `every` seconds until the client hangs up or the test ends (at most 20 s)."""
    end = time.monotonic() + 20
    while not stop.is_set() and time.monotonic() < end:
        conn.sendall(piece)
        stop.wait(every)


def stall(conn, stop):
    stop.wait(20)


def headers(*lines, status=b"HTTP/1.1 200 OK"):
    return b"\r\n".join([status, b"Content-Type: application/json", *lines]) + b"\r\n\r\n"


def behaviours(close):
    """The server's ways of never finishing a reply once its headers are out, the connection kept open
    (close=False) or announced closed (close=True, where http.client hands the socket to the response)."""
    c = [b"Connection: close"] if close else []
    return {
        "headers then nothing": lambda s, stop: (s.sendall(headers(b"Content-Length: 100", *c)),
                                                 stall(s, stop)),
        "a byte at a time": lambda s, stop: (s.sendall(headers(b"Content-Length: 4000", *c)),
                                             trickle(s, stop, b" ")),
        "a Content-Length never filled": lambda s, stop: (s.sendall(headers(b"Content-Length: 1000", *c)
                                                                    + b'{"choices": '), stall(s, stop)),
        "a chunked body without end": lambda s, stop: (s.sendall(headers(b"Transfer-Encoding: chunked", *c)),
                                                      trickle(s, stop, b"1\r\n \r\n")),
        "a chunk announced and never sent": lambda s, stop: (
            s.sendall(headers(b"Transfer-Encoding: chunked", *c) + b"400\r\n{"), stall(s, stop)),
        "no length, read until close": lambda s, stop: (s.sendall(headers(*c)), trickle(s, stop, b" ")),
        "HTTP/1.0, no length": lambda s, stop: (s.sendall(headers(status=b"HTTP/1.0 200 OK")),
                                                trickle(s, stop, b" ", 0.2)),
        "headers a line at a time": lambda s, stop: (s.sendall(b"HTTP/1.1 200 OK\r\n"),
                                                     trickle(s, stop, b"X-Slow: 1\r\n")),
    }


CASES = [(name, close) for close in (False, True) for name in behaviours(close)]


@pytest.mark.parametrize(("name", "close"), CASES, ids=[f"{n}{', Connection: close' * c}" for n, c in CASES])
def test_the_deadline_holds_whatever_the_server_does_after_its_headers(name, close):
    """Was: with `Connection: close` (or HTTP/1.0, or no length) http.client drops its socket reference after
    the headers, the watchdog found nothing to shut down, and a server that stalled or trickled held the
    request for as long as it liked (here up to 20 s for a 1 s timeout)."""
    server = RawServer(behaviours(close)[name])
    try:
        e = RemoteEngine(server.url, "m", timeout=1.0, retries=0, backoff=0.01)
        start = time.monotonic()
        assert e.generate(["q"]) == [[]] and e.failures == 1
        assert time.monotonic() - start < 2.5
        start = time.monotonic()
        with pytest.warns(UserWarning, match=r"no answer to a test request within 1 s|a test request failed"):
            e.check()  # the start check: a warning, within the deadline too
        assert time.monotonic() - start < 2.5
    finally:
        server.close()
