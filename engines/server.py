"""The client of a model behind an OpenAI-compatible server (`vllm serve Qwen/Qwen3.5-27B-FP8`, ...): the
paper's teacher on GPUs of its own, or eval.py's judge. The same engine interface as rollout.py's engines:
prompts in, per prompt a list of n Rollouts out (empty when its request failed for good).
"""
import contextlib
import errno
import http.client
import json
import os
import socket
import threading
import time
import urllib.parse
import warnings
from concurrent.futures import ThreadPoolExecutor

from config import redact_url, url_problem
from engines.video import prompt_videos, video_data_url
from rollout import Rollout, png_data_url, prompt_parts


def endpoint(url):
    """(the URL requests go to, the key in its user part or None). OpenAI clients' rule: a base URL
    (http://host:8000/v1, .../openai/v1) + /chat/completions; a server's root (http://host:8000) means its
    /v1; a full .../chat/completions is taken as it is. The query string is kept as it is (a gateway's
    ?api-version= or ?key=); the user part (user:key@, key@) and a fragment never go on the wire."""
    parts = urllib.parse.urlsplit(url)
    key = parts.password or parts.username  # http://user:KEY@host or http://KEY@host
    path = parts.path.rstrip("/")
    if not path.endswith("/chat/completions"):
        path = (path or "/v1") + "/chat/completions"
    host = parts.netloc.rpartition("@")[2]
    return (urllib.parse.urlunsplit((parts.scheme, host, path, parts.query, "")),
            urllib.parse.unquote(key) if key else None)


class RemoteEngine:
    """A teacher behind an OpenAI-compatible server (e.g. `vllm serve Qwen/Qwen3.5-27B-FP8`).

    Chat completions over HTTP, each request (connect, send, wait, read) within `timeout` seconds in all,
    retries with exponential backoff on transport errors of any kind, timeouts, 429/5xx answers and replies
    that are not a well-formed completion of the requested shape (not JSON, a body over the size the request
    can need, not exactly n choices, a `content` that is no text, text far beyond max_tokens), and at most
    `concurrency` requests in flight. A prompt whose requests all fail gets no rollouts (an empty list) and
    counts in `failures` (`prompts` counts those asked): for train.py that question loses its BCQ this step,
    never the run. The teacher is frozen, so sync_weights does nothing; token ids and log-probs are not
    needed from it and stay empty.

    An API key goes as `Authorization: Bearer KEY`, as OpenAI clients send it: the key in the URL's user
    part when it has one, else the value of the environment variable `api_key_env` (default OPENAI_API_KEY;
    none is sent while it is unset). A 401/403 is said as the key refused, naming that variable. The key and
    the query's values are never shown: messages give the URL redacted (`shown`)."""

    CHARS_PER_TOKEN = 16  # no text averages this many characters per token: a longer one ignored max_tokens

    def __init__(self, url, model, timeout=600.0, retries=3, concurrency=32, backoff=1.0, api_key_env=None):
        problem = url_problem(url)
        if problem:
            raise ValueError(problem)
        self.url, url_key = endpoint(url)
        self.shown = redact_url(self.url)
        self.key_env = api_key_env or "OPENAI_API_KEY"
        env_key = os.environ.get(self.key_env)
        if url_key and api_key_env:
            raise ValueError(f"{redact_url(url)} carries a key in its user part and the key's variable is "
                             f"named too ({api_key_env}): give the key one way")
        if api_key_env and env_key is None:  # named on purpose: a key is expected
            raise ValueError(f"the API key's environment variable {api_key_env} is not set: export "
                             f"{api_key_env}=KEY before starting, or name the variable that holds the key")
        self.key_from = "url" if url_key else "env" if env_key and env_key.strip() else None
        key = url_key or (env_key or "").strip()
        if key and not (key.isascii() and key.isprintable() and " " not in key):  # no header injection
            where = "the URL's user part" if url_key else f"the environment variable {self.key_env}"
            raise ValueError(f"{where} holds characters an HTTP header cannot carry (spaces, line breaks, "
                             "non-ASCII): a bearer token is printable ASCII without spaces")
        self._headers = {"Content-Type": "application/json"}
        if key:
            self._headers["Authorization"] = f"Bearer {key}"
        query = urllib.parse.urlsplit(self.url).query
        values = [p.partition("=")[2] if "=" in p else p for p in query.split("&")]
        # what a message must never hold: the key, each query value (raw and decoded) long enough to be one
        self._secrets = sorted({s for s in [key, *values, *map(urllib.parse.unquote, values)] if len(s) >= 4},
                               key=len, reverse=True)
        self._refusal_said = False
        self.model, self.timeout, self.retries = model, timeout, retries
        self.concurrency, self.backoff = concurrency, backoff
        self.failures, self.prompts, self._lock = 0, 0, threading.Lock()  # requests run in threads

    def sync_weights(self, model, weights=None):
        pass

    def clean(self, text):
        """`text` with the key and the query's values replaced by *** (a server may echo what it was sent)."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def refusal(self, status, payload=b""):
        """What a 401/403 means: the server refused the key. Where the key came from and what to set, by the
        variable's name (never its value), and what the server said."""
        if self.key_from == "url":
            fix = "the key in the URL's user part was sent as a bearer token: correct it"
        elif self.key_from == "env":
            fix = (f"the key in {self.key_env} (set) was sent as a bearer token: set {self.key_env} to a key "
                   "this server accepts")
        else:
            fix = (f"no key was sent: {self.key_env} is not set; export {self.key_env}=KEY, or name the "
                   "variable that holds the key (--teacher-api-key-env / --judge-api-key-env)"
                   + ("; the URL's query string was sent as it is" if urllib.parse.urlsplit(self.url).query
                      else ""))
        said = payload[:200].decode("utf-8", "replace")
        return self.clean(f"{self.shown} refused the API key ({status}) for the model {self.model!r}: {fix} "
                          f"(the server said {said!r})")

    def check(self):
        """One tiny request at start: a configuration that cannot work (nothing listening at the URL, a wrong
        path, a model the server does not serve) stops here, naming the URL; a server that answers but fails
        or is slow now only gets a warning (its requests are counted as they fail)."""
        data = json.dumps({"model": self.model, "messages": [{"role": "user", "content": "Say OK."}], "n": 1,
                           "max_tokens": 1, "temperature": 0.0}).encode()
        try:
            status, payload = self._post(data)
        except TimeoutError:
            warnings.warn(f"{self.shown}: no answer to a test request within {self.timeout:g} s; going on "
                          "(each request that fails is counted)")
            return
        except OSError as e:
            if not isinstance(e, (ConnectionRefusedError, socket.gaierror)) and \
                    e.errno not in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL):
                warnings.warn(self.clean(f"{self.shown}: a test request failed ({type(e).__name__}: {e}); "
                                         "going on"))
                return
            # refused, no such host, unreachable: every request would fail
            raise OSError(self.clean(f"no server answers at {self.shown} ({type(e).__name__}: {e}): start "
                                     "it, or correct the URL")) from e
        except Exception as e:  # noqa: BLE001 (a server that answers, badly: counted request by request)
            warnings.warn(self.clean(f"{self.shown}: a test request failed ({type(e).__name__}: {e}); "
                                     "going on"))
            return
        if status in (401, 403):  # the key, not the URL: every request would be refused the same
            raise OSError(self.refusal(status, payload))
        if 400 <= status < 500 and status != 429:  # refused as asked: every request would be refused the same
            raise OSError(self.clean(
                f"{self.shown} answered {status} to a test request for the model {self.model!r} "
                f"({payload[:200].decode('utf-8', 'replace')!r}): check the URL (the server's root, "
                "http://host:8000, or its OpenAI base URL, http://host:8000/v1) and the model name the "
                "server serves"))
        if status != 200:
            warnings.warn(f"{self.shown}: a test request answered {status}; going on (each request that "
                          "fails is counted)")

    def generate(self, prompts, n=1, max_new_tokens=256, temperature=1.0, top_p=1.0, top_k=0,
                 presence_penalty=0.0, response_prefixes=None, thinking=None):
        if response_prefixes is not None:
            raise ValueError("RemoteEngine: response prefixes need token-level prompts, which a "
                             "chat-completions server does not take; only the student (transformers or vLLM "
                             "engine) continues them")
        body = {"model": self.model, "n": n, "max_tokens": max_new_tokens, "temperature": temperature,
                "top_p": top_p, "presence_penalty": presence_penalty,
                # vLLM's server takes these sampling parameters beside the OpenAI ones; sent always, so the
                # server's defaults from the checkpoint's generation config never apply
                "top_k": top_k if top_k else -1, "min_p": 0.0, "repetition_penalty": 1.0}
        if thinking is not None:  # the chat template's switch, as vLLM's and SGLang's servers take it
            body["chat_template_kwargs"] = {"enable_thinking": thinking}
        with ThreadPoolExecutor(max_workers=max(1, min(self.concurrency, len(prompts)))) as pool:
            return list(pool.map(lambda p: self._complete(p, body), prompts))

    def _post(self, data, limit=None):
        """(status, body) of one POST, all of it within self.timeout: a watchdog shuts the socket down when
        the time is up (a socket timeout alone bounds each read, and a server can keep sending slowly).
        A body over `limit` bytes is cut there (the caller refuses it)."""
        parts = urllib.parse.urlsplit(self.url)
        connection = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        conn = connection(parts.hostname, parts.port, timeout=self.timeout)
        expired, sockets, response = threading.Event(), [], None

        def stop():
            expired.set()
            for sock in sockets:  # the socket itself: http.client drops conn.sock once a reply that will
                with contextlib.suppress(OSError):  # close the connection has begun
                    sock.shutdown(socket.SHUT_RDWR)

        watchdog = threading.Timer(self.timeout, stop)
        watchdog.daemon = True
        watchdog.start()
        try:
            conn.connect()
            sockets.append(conn.sock)
            if expired.is_set():
                raise TimeoutError
            path = parts.path + (f"?{parts.query}" if parts.query else "")
            conn.request("POST", path, body=data, headers=self._headers)
            response = conn.getresponse()
            payload = response.read(limit + 1) if limit else response.read()
        except Exception:
            if expired.is_set():
                raise TimeoutError(f"no complete answer within {self.timeout:g} s") from None
            raise
        finally:
            watchdog.cancel()
            if response is not None:
                response.close()
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
                elif status in (401, 403):  # the key refused: said once, the request counted, not retried
                    with self._lock:
                        said, self._refusal_said = self._refusal_said, True
                    if not said:
                        warnings.warn(self.refusal(status, payload))
                    break
                elif status != 200 and status != 429 and status < 500:
                    break  # a request the server will never accept: do not retry
            # transport errors of every kind, a timeout, a body that is not JSON or nests too deep: one failed
            # attempt, tried again; a remote server never costs a run
            except Exception:  # noqa: BLE001, S110
                pass
        with self._lock:
            self.failures += 1
        return []


def teacher_tally(teacher):
    """(requests that failed, prompts asked, prompts over its context) of the teacher so far, this rank's;
    zeros for none (a gold teacher) and for what an in-process engine does not count."""
    return [getattr(teacher, key, 0) for key in ("failures", "prompts", "too_long")]


def teacher_metrics(teacher, before, step, url, accelerator):
    """count/teacher_failed and count/teacher_too_long since `before` (teacher_tally's), all ranks together
    (each rank's engine serves its share); a teacher that failed every request is said."""
    import torch

    counts = torch.tensor([a - b for a, b in zip(teacher_tally(teacher), before)], dtype=torch.float64,
                          device=accelerator.device)
    failed, asked, too_long = (accelerator.reduce(counts, "sum") if accelerator.num_processes > 1
                               else counts).tolist()
    if asked and failed == asked:
        warnings.warn(f"step {step}: every one of the {asked:.0f} requests to the teacher at "
                      f"{redact_url(url)} failed (count/teacher_failed): no teacher answers, no judge "
                      "verdicts this step; is the server up and serving --teacher?")
    return {"count/teacher_failed": int(failed), "count/teacher_too_long": int(too_long)}
