"""The client of a model behind an OpenAI-compatible server (`vllm serve Qwen/Qwen3.5-27B-FP8`, ...): the
paper's teacher on GPUs of its own, or eval.py's judge. The same engine interface as rollout.py's engines:
prompts in, per prompt a list of n Rollouts out (empty when its request failed for good).
"""
import contextlib
import errno
import http.client
import json
import socket
import threading
import time
import urllib.parse
import warnings
from concurrent.futures import ThreadPoolExecutor

from config import url_problem
from rollout import Rollout, png_data_url, prompt_parts


class RemoteEngine:
    """A teacher behind an OpenAI-compatible server (e.g. `vllm serve Qwen/Qwen3.5-27B-FP8`).

    Chat completions over HTTP, each request (connect, send, wait, read) within `timeout` seconds in all,
    retries with exponential backoff on transport errors of any kind, timeouts, 429/5xx answers and replies
    that are not a well-formed completion of the requested shape (not JSON, a body over the size the request
    can need, not exactly n choices, a `content` that is no text, text far beyond max_tokens), and at most
    `concurrency` requests in flight. A prompt whose requests all fail gets no rollouts (an empty list) and
    counts in `failures` (`prompts` counts those asked): for train.py that question loses its BCQ this step,
    never the run. The teacher is frozen, so sync_weights does nothing; token ids and log-probs are not
    needed from it and stay empty."""

    CHARS_PER_TOKEN = 16  # no text averages this many characters per token: a longer one ignored max_tokens

    def __init__(self, url, model, timeout=600.0, retries=3, concurrency=32, backoff=1.0):
        problem = url_problem(url)
        if problem:
            raise ValueError(problem)
        url = url.rstrip("/")
        self.url = url if url.endswith("/chat/completions") else url + "/v1/chat/completions"
        self.model, self.timeout, self.retries = model, timeout, retries
        self.concurrency, self.backoff = concurrency, backoff
        self.failures, self.prompts, self._lock = 0, 0, threading.Lock()  # requests run in threads

    def sync_weights(self, model, weights=None):
        pass

    def check(self):
        """One tiny request at start: a configuration that cannot work (nothing listening at the URL, a wrong
        path, a model the server does not serve) stops here, naming the URL; a server that answers but fails
        or is slow now only gets a warning (its requests are counted as they fail)."""
        data = json.dumps({"model": self.model, "messages": [{"role": "user", "content": "Say OK."}], "n": 1,
                           "max_tokens": 1, "temperature": 0.0}).encode()
        try:
            status, payload = self._post(data)
        except TimeoutError:
            warnings.warn(f"{self.url}: no answer to a test request within {self.timeout:g} s; going on "
                          "(each request that fails is counted)")
            return
        except OSError as e:
            if not isinstance(e, (ConnectionRefusedError, socket.gaierror)) and \
                    e.errno not in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL):
                warnings.warn(f"{self.url}: a test request failed ({type(e).__name__}: {e}); going on")
                return
            # refused, no such host, unreachable: every request would fail
            raise OSError(f"no server answers at {self.url} ({type(e).__name__}: {e}): start it, or correct "
                          "the URL") from e
        except Exception as e:  # noqa: BLE001 (a server that answers, badly: counted request by request)
            warnings.warn(f"{self.url}: a test request failed ({type(e).__name__}: {e}); going on")
            return
        if 400 <= status < 500 and status != 429:  # refused as asked: every request would be refused the same
            raise OSError(f"{self.url} answered {status} to a test request for the model {self.model!r} "
                          f"({payload[:200].decode('utf-8', 'replace')!r}): check the URL (the server's root "
                          "or its /v1) and the model name the server serves")
        if status != 200:
            warnings.warn(f"{self.url}: a test request answered {status}; going on (each request that fails "
                          "is counted)")

    def generate(self, prompts, n=1, max_new_tokens=256, temperature=1.0, top_p=1.0, top_k=0,
                 presence_penalty=0.0, response_prefixes=None):
        if response_prefixes is not None:
            raise ValueError("RemoteEngine: response prefixes need token-level prompts, which a "
                             "chat-completions server does not take; only the student (transformers or vLLM "
                             "engine) continues them")
        body = {"model": self.model, "n": n, "max_tokens": max_new_tokens, "temperature": temperature,
                "top_p": top_p, "presence_penalty": presence_penalty,
                # vLLM's server takes these sampling parameters beside the OpenAI ones; sent always, so the
                # server's defaults from the checkpoint's generation config never apply
                "top_k": top_k if top_k else -1, "min_p": 0.0, "repetition_penalty": 1.0}
        with ThreadPoolExecutor(max_workers=max(1, min(self.concurrency, len(prompts)))) as pool:
            return list(pool.map(lambda p: self._complete(p, body), prompts))

    def _post(self, data, limit=None):
        """(status, body) of one POST, all of it within self.timeout: a watchdog shuts the socket down when
        the time is up (a socket timeout alone bounds each read, and a server can keep sending slowly).
        A body over `limit` bytes is cut there (the caller refuses it)."""
        parts = urllib.parse.urlsplit(self.url)
        connection = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        conn = connection(parts.hostname, parts.port, timeout=self.timeout)
        expired = threading.Event()

        def stop():
            expired.set()
            with contextlib.suppress(AttributeError, OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)

        watchdog = threading.Timer(self.timeout, stop)
        watchdog.daemon = True
        watchdog.start()
        try:
            conn.connect()
            if expired.is_set():
                raise TimeoutError
            path = parts.path + (f"?{parts.query}" if parts.query else "")
            conn.request("POST", path, body=data, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            payload = response.read(limit + 1) if limit else response.read()
        except Exception:
            if expired.is_set():
                raise TimeoutError(f"no complete answer within {self.timeout:g} s") from None
            raise
        finally:
            watchdog.cancel()
            conn.close()
        if expired.is_set():
            raise TimeoutError(f"no complete answer within {self.timeout:g} s")
        return response.status, payload

    @classmethod
    def _rollouts(cls, payload, n, max_tokens):
        """The n Rollouts of a completion body, or None for anything else (every shape check in one place)."""
        reply = json.loads(payload)
        choices = reply.get("choices") if isinstance(reply, dict) else None
        if not isinstance(choices, list) or len(choices) != n:
            return None
        usage = reply.get("usage")
        used = usage.get("completion_tokens") if isinstance(usage, dict) else None
        if isinstance(used, int) and used > n * max_tokens:
            return None
        out = []
        for c in choices:
            message = c.get("message") if isinstance(c, dict) else None
            text = message.get("content") if isinstance(message, dict) else None
            reason = c.get("finish_reason") if isinstance(c, dict) else None
            if message is None or not isinstance(text, (str, type(None))) or \
                    not isinstance(reason, (str, type(None))):
                return None
            if text and len(text) > cls.CHARS_PER_TOKEN * max_tokens:
                return None
            out.append(Rollout(text=text or "", prompt_ids=[], token_ids=[], finish_reason=reason or "stop"))
        return out

    def _complete(self, prompt, body):
        if isinstance(prompt, list):  # a multi-turn chat, as it is
            messages = prompt
        else:  # images as OpenAI-style parts (base64 PNG data URLs), before the text
            text, images = prompt_parts(prompt)
            content = text if not images else [{"type": "image_url", "image_url": {"url": png_data_url(x)}}
                                               for x in images] + [{"type": "text", "text": text}]
            from benchmarks.video import prompt_videos, video_data_url  # evaluation's video benchmarks

            if prompt_videos(prompt):  # the server's documented video input: the file, sampled by the server
                clips = [{"type": "video_url", "video_url": {"url": video_data_url(v)}}
                         for v in prompt_videos(prompt)]
                content = clips + (content if isinstance(content, list) else [{"type": "text", "text": text}])
            messages = [{"role": "user", "content": content}]
        data = json.dumps({**body, "messages": messages}).encode()
        # the most a well-formed reply can need: the text (JSON-escaped) of n choices, and room for the rest
        limit = 8 * self.CHARS_PER_TOKEN * body["n"] * body["max_tokens"] + (1 << 20)
        with self._lock:
            self.prompts += 1
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                status, payload = self._post(data, limit)
                if status == 200 and len(payload) <= limit:
                    rollouts = self._rollouts(payload, body["n"], body["max_tokens"])
                    if rollouts is not None:
                        return rollouts
                elif status != 200 and status != 429 and status < 500:
                    break  # a request the server will never accept: do not retry
            # transport errors of every kind, a timeout, a body that is not JSON or nests too deep: one failed
            # attempt, tried again; a remote server never costs a run
            except Exception:  # noqa: BLE001, S110
                pass
        with self._lock:
            self.failures += 1
        return []
