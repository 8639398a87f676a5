"""A fake OpenAI-compatible server: a real HTTP server on loopback, for tests and benchmarks.

It answers ``POST /v1/chat/completions`` (not streamed) and ``GET /v1/models``. By default
it reads the file, its path and the diagnostic codes out of stomper's prompt (the format of
:func:`stomper.agents.prompt.task_prompt`), fixes the file with ruff's own fixes for those
codes, and answers with SEARCH/REPLACE blocks (or the whole file), with a ``usage`` block of
roughly one token per four characters. A task's prompt (:func:`stomper.tasks.prompt.task_prompt`
with the files shown) is answered with the blocks that do what its ``fake-agent:`` lines say
to the files it shows (:func:`task_answer`), as the fake CLI agent does in a tree.

Latency models (:class:`FixedLatency`, :class:`RandomLatency`, :class:`ThroughputLatency`)
set how long an answer takes; a :class:`FaultPolicy` picks, request by request, the
:class:`Fault` to answer with instead (the ``ECHO_*`` ones hostile: they send the key the
request came with back where a client reads it); a :class:`Behaviour` sets how much of the work a
successful answer does. :meth:`FakeOpenAI.stats` tells what happened.

Each request is served in a thread of its own; the server stays stdlib-only (and ruff), so
it can run beside any client::

    with FakeOpenAI(faults=FaultPolicy(rates={Fault.RATE_LIMIT: 0.2}, seed=1)) as server:
        ...  # point the client at server.base_url
"""

from __future__ import annotations

import base64
import difflib
import json
import random
import re
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import PurePosixPath
from types import TracebackType
from typing import Any, Literal, Protocol, TypeVar

from stomper import pysource
from stomper.agents.edits import ANSWER_FORMAT, WHOLE_FILE_FORMAT
from stomper.diagnostics.ruff import ruff_binary
from stomper.tasks.prompt import FILES_HEADING, MISSING
from stomper.testing.fake_cli_agent import ScriptFailed, run_script
from stomper.testing.fake_reviewer import (
    ReviewStyle,
    read_reflection,
    read_review,
    reflect_answer,
    review_answer,
)


class Fault(StrEnum):
    """What a request may get instead of a good answer."""

    RATE_LIMIT = "rate_limit"
    """429 with a ``Retry-After`` header."""
    SERVER_ERROR = "server_error"
    """500 with an error body."""
    HANG = "hang"
    """No answer until ``hang_seconds`` pass (or the server closes): past any timeout."""
    GARBAGE = "garbage"
    """200 with prose and no edit in it."""
    SUPPRESS = "suppress"
    """Adds ``# noqa: CODE`` (``# type: ignore[code]`` for mypy's) to each flagged line
    instead of fixing it."""
    OTHER_FILE = "other_file"
    """The fix, plus a new file beside the unit's."""
    MISMATCH = "mismatch"
    """The fix, but its first SEARCH part does not occur in the file (SEARCH/REPLACE
    answers only)."""
    ECHO_USAGE = "echo_usage"
    """The fix, with the ``Authorization`` header it was sent (``Bearer <key>``) as
    ``usage.prompt_tokens``: a field the client parses, holding the key."""
    ECHO_EDIT = "echo_edit"
    """The fix, plus a comment in the file holding the API key it was sent: a model that
    writes what it was given into its edit."""
    ECHO_MODELS = "echo_models"
    """For ``GET /models`` (see :attr:`FaultPolicy.models`): the models, and one more whose
    id is the ``Authorization`` header it was sent."""
    HUGE = "huge"
    """An answer of ``huge_bytes``: one SEARCH/REPLACE block whose SEARCH part, made of
    lines like the file's, occurs nowhere in it."""


class Behaviour(StrEnum):
    """How much of the work a good answer does."""

    FIX = "fix"
    """Everything ruff can fix for the listed codes."""
    ONE_PER_ATTEMPT = "one_per_attempt"
    """Only the first listed code that ruff can still fix: one step per request."""
    NO_PROGRESS = "no_progress"
    """An edit that applies but resolves nothing (a comment above the first flagged line)."""


@dataclass(frozen=True)
class FaultPolicy:
    """Which fault each chat request gets.

    In order: the global ``schedule`` (entry *n* for the *n*-th chat request, None for a good
    answer), then ``per_path`` (entry *n* for the *n*-th request about that file), then a
    seeded draw from ``rates`` (a probability per fault, summing to at most 1).
    """

    rates: Mapping[Fault, float] = field(default_factory=dict)
    seed: int = 0
    schedule: Sequence[Fault | None] = ()
    per_path: Mapping[str, Sequence[Fault | None]] = field(default_factory=dict)
    models: Fault | None = None
    """What every ``GET /models`` gets instead of the list: ``RATE_LIMIT``, ``SERVER_ERROR``
    or ``ECHO_MODELS``."""


T = TypeVar("T")


class Latency(Protocol):
    """How long a good answer takes; blocks the request's own thread. The answer is made
    within that time, as a model's is, not after it."""

    def serve(self, closing: threading.Event, make: Callable[[], T]) -> T:
        """``make()`` the answer and wait out the rest of its time; once ``closing`` is set,
        without waiting."""
        ...


def _within(seconds: float, closing: threading.Event, make: Callable[[], T]) -> T:
    started = time.monotonic()
    answer = make()
    rest = seconds - (time.monotonic() - started)
    if rest > 0:
        closing.wait(rest)
    return answer


@dataclass(frozen=True)
class FixedLatency:
    """Every answer takes ``seconds``."""

    seconds: float = 0.0

    def serve(self, closing: threading.Event, make: Callable[[], T]) -> T:
        return _within(self.seconds, closing, make)


class RandomLatency:
    """Each answer takes a seeded uniform draw between ``low`` and ``high`` seconds."""

    def __init__(self, low: float, high: float, *, seed: int = 0) -> None:
        self.low = low
        self.high = high
        self._random = random.Random(seed)
        self._lock = threading.Lock()

    def draw(self) -> float:
        """The time the next answer takes."""
        with self._lock:
            return self._random.uniform(self.low, self.high)

    def serve(self, closing: threading.Event, make: Callable[[], T]) -> T:
        return _within(self.draw(), closing, make)


class ThroughputLatency:
    """A server with ``slots`` answers in progress at once, ``seconds`` each; the rest
    queue for a free slot, as on a GPU server with a fixed batch."""

    def __init__(self, slots: int, seconds: float) -> None:
        self.slots = slots
        self.seconds = seconds
        self._free = threading.Semaphore(slots)
        self._lock = threading.Lock()
        self.busy = 0
        self.peak_busy = 0
        self.served = 0
        """Answers made and waited out in a slot."""
        self.first_arrival: float | None = None
        """When the first request arrived (``time.monotonic()``)."""
        self.last_answer: float | None = None
        """When the last answer was ready."""

    def serve(self, closing: threading.Event, make: Callable[[], T]) -> T:
        with self._lock:
            if self.first_arrival is None:
                self.first_arrival = time.monotonic()
        while not self._free.acquire(timeout=0.05):
            if closing.is_set():
                return make()
        try:
            with self._lock:
                self.busy += 1
                self.peak_busy = max(self.peak_busy, self.busy)
            answer = _within(self.seconds, closing, make)
            with self._lock:
                self.served += 1
                self.last_answer = time.monotonic()
            return answer
        finally:
            with self._lock:
                self.busy -= 1
            self._free.release()

    def serving_s(self) -> float:
        """Seconds from the first request's arrival to the last answer: the time the server
        was asked to be busy."""
        with self._lock:
            if self.first_arrival is None or self.last_answer is None:
                return 0.0
            return self.last_answer - self.first_arrival


@dataclass(frozen=True)
class Stats:
    """What the server saw, at the moment it was asked."""

    requests: int
    """Every HTTP request."""
    completions: int
    """Chat completion requests."""
    statuses: Mapping[int, int]
    """Responses sent, by status code (a hang sends none)."""
    faults: Mapping[str, int]
    tokens_in: int
    tokens_out: int
    peak_in_service: int
    """The most requests being served at once (queued for a slot included)."""
    calls_per_path: Mapping[str, int]
    errors: tuple[str, ...]
    """The fake's own failures to understand a request (a bug in a test, or in the fake)."""


@dataclass(frozen=True)
class Prompt:
    """What the fake read out of a prompt."""

    path: str
    diagnostics: tuple[tuple[int, str], ...]
    """(line, code) in the order listed, of every tool (only ruff's get fixed)."""
    source: str | None
    """The whole file, when the prompt shows it whole."""
    excerpts: tuple[tuple[int, tuple[str, ...]], ...]
    """(first line number, lines) of each part shown, when the file is shown in parts."""


EditFormat = Literal["search_replace", "whole_file"]
Part = tuple[str, str, str]
"""(old, new, context): a part of the file shown, what it becomes, and the text a SEARCH
part must be unique in (the whole file when shown whole, else the part itself)."""
_RUFF_CODE = re.compile(r"[A-Z]+[0-9]+")
_HEADER = re.compile(r"Fix these diagnostics in `(?P<path>[^`\n]+)`:\n")
_DIAGNOSTIC = re.compile(r"- line (?P<line>\d+): (?P<tool>\S+) (?P<code>\S+): .*")
_NUMBERED = re.compile(r" *(?P<number>\d+) \| (?P<text>.*)")
_FEEDBACK = "```\n\nYour previous attempt was not accepted:\n"
_GARBAGE = (
    "I looked at the file and I think the code is fine as it is. "
    "Let me know if you want me to change anything else!"
)


class FakeOpenAI:
    """The fake server; a context manager that starts and stops it."""

    def __init__(
        self,
        *,
        models: Sequence[str] = ("fake",),
        latency: Latency | None = None,
        faults: FaultPolicy | None = None,
        behaviour: Behaviour = Behaviour.FIX,
        edit_format: EditFormat = "search_replace",
        retry_after: float = 0.05,
        hang_seconds: float = 30.0,
        huge_bytes: int = 50_000_000,
        api_key: str | None = None,
        basic_auth: str | None = None,
        review: ReviewStyle | None = None,
        capacity: int | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        """``api_key``, when given, is required as a bearer token (401 otherwise, quoting
        the key received, as real servers do); ``basic_auth`` (``user:password``), as HTTP
        basic credentials, which is what a client sends for a URL that holds them.
        ``retry_after`` is the ``Retry-After`` of a
        429, in seconds. A review prompt is answered by
        :mod:`~stomper.testing.fake_reviewer`, erring as ``review`` says. With ``capacity``,
        a completion asked while that many are being answered gets a 429 at once, as a
        server with a fixed number of places that queues none."""
        self.capacity = capacity
        self._answering_now = 0
        self.models = tuple(models)
        self.latency: Latency = latency or FixedLatency()
        self.faults = faults or FaultPolicy()
        self.behaviour = behaviour
        self.edit_format: EditFormat = edit_format
        self.retry_after = retry_after
        self.hang_seconds = hang_seconds
        self.huge_bytes = huge_bytes
        self.api_key = api_key
        self.basic_auth = basic_auth
        self.review = review or ReviewStyle()
        self._address = (host, port)
        self._random = random.Random(self.faults.seed)
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._requests = 0
        self._completions = 0
        self._statuses: Counter[int] = Counter()
        self._faults: Counter[str] = Counter()
        self._tokens_in = 0
        self._tokens_out = 0
        self._in_service = 0
        self._peak = 0
        self._calls: Counter[str] = Counter()
        self._errors: list[str] = []

    def __enter__(self) -> FakeOpenAI:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def start(self) -> None:
        """Listen (on an ephemeral port unless one was given) and serve in a thread."""
        self._server = _Server(self._address, _Handler, self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        """Stop serving: hanging requests are let go, every thread and socket is closed."""
        self._closing.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        self._server = self._thread = None

    @property
    def base_url(self) -> str:
        """The URL to give a client: ``http://127.0.0.1:PORT/v1``."""
        if self._server is None:
            raise RuntimeError("the fake server is not running: use it as a context manager")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def stats(self) -> Stats:
        with self._lock:
            return Stats(
                requests=self._requests,
                completions=self._completions,
                statuses=dict(self._statuses),
                faults=dict(self._faults),
                tokens_in=self._tokens_in,
                tokens_out=self._tokens_out,
                peak_in_service=self._peak,
                calls_per_path=dict(self._calls),
                errors=tuple(self._errors),
            )

    # The request handler calls what follows, from its own thread.

    def _begin(self) -> None:
        with self._lock:
            self._requests += 1
            self._in_service += 1
            self._peak = max(self._peak, self._in_service)

    def _end(self, status: int | None) -> None:
        with self._lock:
            self._in_service -= 1
            if status is not None:
                self._statuses[status] += 1

    def _admit(self) -> bool:
        """Whether a completion may be answered now (one more in service), by ``capacity``."""
        with self._lock:
            if self.capacity is not None and self._answering_now >= self.capacity:
                self._faults["over_capacity"] += 1
                return False
            self._answering_now += 1
            return True

    def _leave(self) -> None:
        with self._lock:
            self._answering_now -= 1

    def _error(self, message: str) -> None:
        with self._lock:
            self._errors.append(message)

    def _authorized(self, header: str | None) -> bool:
        if self.basic_auth is not None:
            credentials = base64.b64encode(self.basic_auth.encode()).decode()
            return header == f"Basic {credentials}"
        return self.api_key is None or header == f"Bearer {self.api_key}"

    def _choose(self, path: str) -> Fault | None:
        with self._lock:
            self._completions += 1
            self._calls[path] += 1
            number, call = self._completions, self._calls[path]
            draw = self._random.random()
        if number <= len(self.faults.schedule):
            return self.faults.schedule[number - 1]
        planned = self.faults.per_path.get(path, ())
        if call <= len(planned):
            return planned[call - 1]
        for fault, rate in self.faults.rates.items():
            if draw < rate:
                return fault
            draw -= rate
        return None

    def _count(self, fault: Fault | None, tokens_in: int, tokens_out: int) -> None:
        with self._lock:
            if fault is not None:
                self._faults[fault.value] += 1
            self._tokens_in += tokens_in
            self._tokens_out += tokens_out

    def _answer(self, prompt: Prompt, fault: Fault | None, *, key: str = "") -> str:
        """The text of a 200 answer: the fix, or the fault's imitation of one; ``key`` is the
        API key the request came with."""
        if fault is Fault.GARBAGE:
            return _GARBAGE
        if fault is Fault.HUGE:
            return _huge(prompt.path, self.huge_bytes)
        if fault is Fault.SUPPRESS:
            return self._render(prompt, _suppressed(prompt))
        if self.behaviour is Behaviour.NO_PROGRESS:
            return self._render(prompt, _commented(prompt))
        fixed = _fixed(prompt, one=self.behaviour is Behaviour.ONE_PER_ATTEMPT)
        if fault is Fault.ECHO_EDIT and fixed:
            old, new, context = fixed[0]
            fixed[0] = (old, f"{new}{_newline(new)}# The key I was given: {key}\n", context)
        answer = self._render(prompt, fixed)
        if fault is Fault.MISMATCH:
            answer = _spoil(answer)
        if fault is Fault.OTHER_FILE:
            other = PurePosixPath(prompt.path).with_name(
                PurePosixPath(prompt.path).stem + "_helpers.py"
            )
            answer += f"\n{other}\n<<<<<<< SEARCH\n=======\nHELPER = 1\n>>>>>>> REPLACE\n"
        return answer

    def _render(self, prompt: Prompt, parts: list[Part]) -> str:
        """An answer that turns each part's old text into its new text."""
        if self.edit_format == "whole_file" and prompt.source is not None:
            new = parts[0][1] if parts else prompt.source
            fence = "````" if "```" in new else "```"
            return f"FILE: {prompt.path}\n{fence}python\n{new}{_newline(new)}{fence}\n"
        blocks = [
            pair for old, new, context in parts for pair in _blocks(old, new, context=context)
        ]
        if not blocks:
            return "The file needs no change."
        return "Here are the edits:\n\n" + "\n".join(
            _block(prompt.path, search, replace) for search, replace in blocks
        )


class _Server(ThreadingHTTPServer):
    # Handler threads are joined on close, so a test never ends with one still running.
    daemon_threads = False
    block_on_close = True
    # socketserver listens with a backlog of 5: a client opening more connections at once
    # than that has the rest dropped and retried a second later, which no real server does.
    request_queue_size = 1024

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], fake: FakeOpenAI
    ) -> None:
        self.fake = fake
        super().__init__(address, handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (a timeout) and closed its end is not an error of the server.
        pass


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.0: one request per connection, so no idle connection outlives a request.
    protocol_version = "HTTP/1.0"
    server: _Server
    timeout = 30
    _served = False

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        fake = self.server.fake
        self._served = False
        fake._begin()
        try:
            if self.path.rstrip("/") != "/v1/models":
                self._json(404, _error("not found", "not_found"))
            elif not fake._authorized(self.headers.get("Authorization")):
                self._unauthorized()
            else:
                self._models(fake)
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            self._done(None)

    def _models(self, fake: FakeOpenAI) -> None:
        fault = fake.faults.models
        fake._count(fault, 0, 0)
        if fault is Fault.RATE_LIMIT:
            return self._rate_limited(fake)
        if fault is Fault.SERVER_ERROR:
            return self._json(500, _error("The server had an error", "server_error"))
        names = list(fake.models)
        if fault is Fault.ECHO_MODELS:
            names.append(self.headers.get("Authorization") or "")
        data = [
            {"id": name, "object": "model", "created": 0, "owned_by": "stomper"} for name in names
        ]
        return self._json(200, {"object": "list", "data": data})

    def do_POST(self) -> None:
        fake = self.server.fake
        self._served = False
        fake._begin()
        try:
            self._post(fake)
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as exc:  # the fake's own bug: answer 500 and record it
            fake._error(f"{type(exc).__name__}: {exc}")
            self._json(500, _error(f"fake server error: {exc}", "server_error"))
        finally:
            self._done(None)

    def _done(self, status: int | None) -> None:
        """Count the request as served, once."""
        if not self._served:
            self._served = True
            self.server.fake._end(status)

    def _post(self, fake: FakeOpenAI) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        if self.path.rstrip("/") != "/v1/chat/completions":
            return self._json(404, _error("not found", "not_found"))
        if not fake._authorized(self.headers.get("Authorization")):
            return self._unauthorized()
        model = body.get("model")
        if model not in fake.models:
            return self._json(404, _error(f"The model `{model}` does not exist", "model_not_found"))
        messages = body.get("messages") or []
        text = next((m.get("content") for m in reversed(messages) if m.get("role") == "user"), "")
        answering = _answering(fake, text if isinstance(text, str) else "")
        if answering is None:
            fake._error("the prompt is not in stomper's format")
            return self._json(400, _error("the fake cannot read this prompt", "bad_prompt"))
        path, answer_to = answering
        fault = fake._choose(path)
        tokens_in = sum(len(str(m.get("content") or "")) for m in messages) // 4 + 1
        if fault is Fault.RATE_LIMIT:
            fake._count(fault, 0, 0)
            return self._rate_limited(fake)
        if fault is Fault.SERVER_ERROR:
            fake._count(fault, 0, 0)
            return self._json(500, _error("The server had an error", "server_error"))
        if fault is Fault.HANG:
            fake._count(fault, 0, 0)
            fake._closing.wait(fake.hang_seconds)
            return
        authorization = self.headers.get("Authorization") or ""
        key = authorization.removeprefix("Bearer ")
        if not fake._admit():
            return self._rate_limited(fake)
        try:
            answer = fake.latency.serve(fake._closing, lambda: answer_to(fault, key))
        finally:
            fake._leave()
        tokens_out = len(answer) // 4 + 1
        fake._count(fault, tokens_in, tokens_out)
        usage: dict[str, object] = {
            "prompt_tokens": authorization if fault is Fault.ECHO_USAGE else tokens_in,
            "completion_tokens": tokens_out,
            "total_tokens": tokens_in + tokens_out,
        }
        return self._json(
            200,
            {
                "id": f"chatcmpl-fake-{time.monotonic_ns()}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": answer},
                        "finish_reason": "stop",
                        "logprobs": None,
                    }
                ],
                "usage": usage,
            },
        )

    def _rate_limited(self, fake: FakeOpenAI) -> None:
        self._json(
            429,
            _error("Rate limit reached: slow down", "rate_limit_exceeded"),
            headers={"Retry-After": f"{fake.retry_after:g}"},
        )

    def _unauthorized(self) -> None:
        given = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
        self._json(401, _error(f"Incorrect API key provided: {given}", "invalid_api_key"))

    def _json(
        self, status: int, payload: object, *, headers: Mapping[str, str] | None = None
    ) -> None:
        data = json.dumps(payload).encode()
        # Counted before the client can read the answer, so stats() taken after it agree.
        self._done(status)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


def _error(message: str, code: str) -> dict[str, object]:
    return {"error": {"message": message, "type": code, "param": None, "code": code}}


def _answering(
    fake: FakeOpenAI, text: str
) -> tuple[str, Callable[[Fault | None, str], str]] | None:
    """The path a prompt is about (a task's id), and what answers it given the fault drawn
    and the API key: a task's prompt gets the edits its script makes, a review prompt
    findings, a reflection scores, a fix prompt edits; None for a prompt of none of them."""
    task = read_task(text)
    if task is not None:

        def worked(fault: Fault | None, key: str) -> str:
            return _GARBAGE if fault is Fault.GARBAGE else task_answer(task)

        return task.id, worked
    reflection = read_reflection(text)
    if reflection is not None:

        def scores(fault: Fault | None, key: str) -> str:
            return _GARBAGE if fault is Fault.GARBAGE else reflect_answer(reflection)

        return reflection.path, scores
    review = read_review(text)
    if review is not None:
        style = fake.review

        def findings(fault: Fault | None, key: str) -> str:
            return _GARBAGE if fault is Fault.GARBAGE else review_answer(review, style, key)

        return review.path, findings
    prompt = read_prompt(text)
    if prompt is None:
        return None

    def edits(fault: Fault | None, key: str) -> str:
        return fake._answer(prompt, fault, key=key)

    return prompt.path, edits


@dataclass(frozen=True)
class TaskPrompt:
    """A task's prompt, as :func:`stomper.tasks.prompt.task_prompt` writes it for a chat
    model: the task's id, the prompt without the files it shows, and those files (None:
    not there yet)."""

    id: str
    script: str
    shown: dict[str, str | None]


_SHOWN_HEADING = re.compile(r"### `(?P<path>[^`]+)`(?P<note>.*)")


def read_task(text: str) -> TaskPrompt | None:
    """The task a prompt is of, and the files it shows; None for a prompt of no task or
    one that shows no files (a CLI agent's)."""
    if not text.startswith("# Task ") or FILES_HEADING not in text:
        return None
    task_id = text.splitlines()[0].removeprefix("# Task ").strip()
    before, _, after = text.partition(FILES_HEADING)
    lines = after.splitlines()
    shown: dict[str, str | None] = {}
    index = 0
    while index < len(lines) and not lines[index].startswith("## "):
        heading = _SHOWN_HEADING.fullmatch(lines[index])
        index += 1
        if heading is None:
            continue
        if MISSING in heading["note"]:
            shown[heading["path"]] = None
            continue
        if heading["note"].strip() or index >= len(lines):
            continue  # not shown
        fence = lines[index]
        end = lines.index(fence, index + 1)
        body = lines[index + 1 : end]
        shown[heading["path"]] = "".join(line + "\n" for line in body)
        index = end + 1
    rest = "\n".join(lines[index:])
    return TaskPrompt(task_id, before + rest, shown)


class _ShownFiles:
    """The files a task's prompt shows, as a task script changes them."""

    def __init__(self, shown: Mapping[str, str | None]) -> None:
        self.texts = dict(shown)

    def read(self, path: str) -> str:
        text = self.texts.get(path)
        if text is None:
            raise FileNotFoundError(path)
        return text

    def write(self, path: str, text: str) -> None:
        self.texts[path] = text

    def delete(self, path: str) -> None:
        self.texts[path] = None


def task_answer(task: TaskPrompt) -> str:
    """What a model that does what the task's ``fake-agent:`` lines say answers
    (:func:`~stomper.testing.fake_cli_agent.run_script`, on the files the prompt shows):
    one SEARCH/REPLACE block per file it changes, its SEARCH part the whole file as shown
    (empty for a new file). A ``fail`` line is an answer with no block; a file deleted is
    left out, as the answer's format cannot say it."""
    files = _ShownFiles(task.shown)
    try:
        run_script(task.script, files)
    except ScriptFailed as failed:
        return f"I cannot do this task: {failed}"
    blocks = []
    for path, new in files.texts.items():
        old = task.shown.get(path)
        if new is None or new == old:
            continue
        blocks.append(_block(path, old or "", new))
    return "Here is the change:\n\n" + "\n".join(blocks) if blocks else "Nothing to change."


def read_prompt(text: str) -> Prompt | None:
    """The file, its path and its diagnostics, read out of a prompt of ``task_prompt``."""
    header = _HEADER.match(text)
    if header is None:
        return None
    path = header["path"]
    diagnostics = []
    for line in text[header.end() :].split("\n"):
        found = _DIAGNOSTIC.fullmatch(line)
        if found is None:
            break
        diagnostics.append((int(found["line"]), found["code"]))
    whole = f"The file `{path}`:\n```python\n"
    start = text.find(whole)
    if start != -1:
        return Prompt(path, tuple(diagnostics), _whole_source(text, start + len(whole)), ())
    parts = re.search(
        rf"The file `{re.escape(path)}` has \d+ lines; these are the parts .*?:\n```\n", text
    )
    if parts is None:
        return Prompt(path, tuple(diagnostics), None, ())
    end = text.find("\n```", parts.end())
    return Prompt(path, tuple(diagnostics), None, _excerpts(text[parts.end() : end]))


def _whole_source(prompt: str, start: int) -> str:
    """The file shown whole: up to the fence before the feedback, the answer format, or
    the end (the fence follows the file's last character, newline or not)."""
    end = prompt.find(_FEEDBACK, start)
    if end == -1:
        for form in (ANSWER_FORMAT, WHOLE_FILE_FORMAT):
            end = prompt.find("```\n\n" + form.split("\n", 1)[0], start)
            if end != -1:
                break
    if end == -1:
        end = prompt.rfind("```")
    return prompt[start:end]


def _excerpts(text: str) -> tuple[tuple[int, tuple[str, ...]], ...]:
    out: list[tuple[int, tuple[str, ...]]] = []
    for chunk in text.split("\n...\n"):
        numbered = [_NUMBERED.fullmatch(line) for line in chunk.split("\n")]
        lines = [found for found in numbered if found is not None]
        if lines:
            out.append((int(lines[0]["number"]), tuple(found["text"] for found in lines)))
    return tuple(out)


def _shown(prompt: Prompt) -> list[tuple[int, str]]:
    """(first line number, text) of each part of the file the prompt shows."""
    if prompt.source is not None:
        return [(1, prompt.source)]
    return [(first, "".join(line + "\n" for line in lines)) for first, lines in prompt.excerpts]


def _fixed(prompt: Prompt, *, one: bool) -> list[Part]:
    """Each part shown, as ruff fixes the listed codes in it (all of them, or the first
    that still changes something when ``one``)."""
    codes = list(
        dict.fromkeys(code for _, code in prompt.diagnostics if _RUFF_CODE.fullmatch(code))
    )

    def fix(text: str) -> str:
        if not one:
            return _ruff_fix(text, prompt.path, codes)
        for code in codes:
            fixed = _ruff_fix(text, prompt.path, [code])
            if fixed != text:
                return fixed
        return text

    flagged = {line for line, _ in prompt.diagnostics}
    parts: list[Part] = []
    for first, text in _shown(prompt):
        if prompt.source is not None:
            old = text
            new = fix(old)
        else:
            # A window around a line may end inside a function: fix what parses of it. Ruff
            # sees only the window (an import used further down looks unused): keep only
            # the changes of flagged lines.
            old = _parseable_prefix(text)
            new = _only_lines(old, fix(old), first, flagged)
        parts.append((old, new, prompt.source or old))
        if one and new != old:
            break
    return parts


def _only_lines(old: str, new: str, first: int, numbers: set[int]) -> str:
    """``new``, but with only the changes that touch lines ``numbers`` of ``old`` (whose
    first line is number ``first``)."""
    old_lines, new_lines = _keep_ends(old), _keep_ends(new)
    out: list[str] = []
    matcher = difflib.SequenceMatcher(None, old_lines, new_lines, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            out += old_lines[i1:i2]
        elif tag == "delete" or (tag == "replace" and i2 - i1 == j2 - j1):
            # Line by line: one hunk may remove a flagged import and an unflagged one.
            for k in range(i2 - i1):
                flagged = first + i1 + k in numbers
                out += [new_lines[j1 + k]] if tag == "replace" and flagged else []
                out += [] if flagged else [old_lines[i1 + k]]
        else:
            touched = range(first + i1, first + max(i2, i1 + 1))
            flagged = any(number in numbers for number in touched)
            out += new_lines[j1:j2] if flagged else old_lines[i1:i2]
    return "".join(out)


def _suppressed(prompt: Prompt) -> list[Part]:
    """The flagged lines, each with a comment silencing its codes."""
    codes: dict[int, list[str]] = {}
    for line, code in prompt.diagnostics:
        codes.setdefault(line, []).append(code)
    return _line_edits(prompt, {line: _suppression(found) for line, found in codes.items()})


def _suppression(codes: list[str]) -> str:
    ruff = [code for code in codes if _RUFF_CODE.fullmatch(code)]
    others = [code for code in codes if code not in ruff]
    return (f"  # noqa: {', '.join(ruff)}" if ruff else "") + (
        f"  # type: ignore[{', '.join(others)}]" if others else ""
    )


def _commented(prompt: Prompt) -> list[Part]:
    """A comment above the first flagged line: a change that resolves nothing."""
    if not prompt.diagnostics:
        return []
    return _line_edits(prompt, {prompt.diagnostics[0][0]: ""}, above="# Checked.")


def _line_edits(prompt: Prompt, suffixes: Mapping[int, str], *, above: str = "") -> list[Part]:
    """Each part shown with a suffix added to numbered lines, and ``above`` (indented like
    the line) put before each of them."""
    parts: list[Part] = []
    for first, text in _shown(prompt):
        lines = _keep_ends(text)
        changed = False
        for offset, line in enumerate(lines):
            suffix = suffixes.get(first + offset)
            if suffix is None:
                continue
            body = line.rstrip("\n")
            indent = body[: len(body) - len(body.lstrip())]
            ending = line[len(body) :]
            lines[offset] = (f"{indent}{above}\n" if above else "") + body + suffix + ending
            changed = True
        if changed:
            parts.append((text, "".join(lines), prompt.source or text))
    return parts


def _huge(path: str, size: int) -> str:
    """A block of about ``size`` bytes whose SEARCH lines occur in no file."""
    head = f"{path}\n<<<<<<< SEARCH\n"
    tail = "=======\n>>>>>>> REPLACE\n"
    line = "value = compute(value)  # as I remember it\n"
    count = max(1, (size - len(head) - len(tail)) // len(line))
    return head + line * count + tail


def _spoil(answer: str) -> str:
    """The answer with its first SEARCH part's first line changed, so it matches nothing."""
    marker = "<<<<<<< SEARCH\n"
    at = answer.find(marker)
    if at == -1:
        return answer
    start = at + len(marker)
    end = answer.find("\n", start)
    if answer[start:end] == "=======":
        return answer
    return answer[:end] + "  # as I remember it" + answer[end:]


def _ruff_fix(text: str, path: str, codes: Sequence[str]) -> str:
    if not codes:
        return text
    binary = ruff_binary()
    if binary is None:
        raise RuntimeError("ruff is not installed: pip install ruff")
    # A blocking call is right here: this runs in a request's own thread, not in a loop.
    done = subprocess.run(
        [
            binary,
            "check",
            "--fix-only",
            "--isolated",
            "--no-cache",
            "--quiet",
            "--select",
            ",".join(codes),
            "--stdin-filename",
            path,
            "-",
        ],
        input=text.encode(),
        capture_output=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"ruff failed: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout.decode()


def _parseable_prefix(text: str) -> str:
    """The longest run of whole lines from the start that parses: a window around a line
    may end inside a function."""
    lines = text.split("\n")
    for end in range(len(lines), 0, -1):
        candidate = "\n".join(lines[:end])
        try:
            pysource.parse(candidate)
        except SyntaxError:
            continue
        return candidate if candidate.endswith("\n") else candidate + "\n"
    return ""


def _blocks(old: str, new: str, *, context: str) -> list[tuple[str, str]]:
    """SEARCH/REPLACE pairs turning ``old`` into ``new``, each SEARCH unique in ``context``."""
    old_lines, new_lines = _keep_ends(old), _keep_ends(new)
    if not old_lines:
        return [("", new)] if new else []
    if old == new:
        # Nothing to fix: a block that changes nothing, as a model that found nothing does.
        first = next((n for n, line in enumerate(old_lines) if line.strip()), 0)
        return [_unique(old_lines, first, first + 1, old_lines[first : first + 1], context)]
    matcher = difflib.SequenceMatcher(None, old_lines, new_lines, autojunk=False)
    spans: list[tuple[int, int, int, int]] = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        if spans and i1 <= spans[-1][1] + 1:
            spans[-1] = (spans[-1][0], i2, spans[-1][2], j2)
        else:
            spans.append((i1, i2, j1, j2))
    return [_unique(old_lines, i1, i2, new_lines[j1:j2], context) for i1, i2, j1, j2 in spans]


def _unique(
    old_lines: list[str], start: int, end: int, replacement: list[str], context: str
) -> tuple[str, str]:
    """A SEARCH for ``old_lines[start:end]``, grown by a line on each side until it occurs
    once in ``context`` (and is not empty), and its REPLACE."""
    grow = 0
    while True:
        before, after = max(0, start - grow), min(len(old_lines), end + grow)
        search = "".join(old_lines[before:after])
        whole = before == 0 and after == len(old_lines)
        if (search.strip() and _occurrences(context, search) == 1) or whole:
            replace = "".join(old_lines[before:start] + replacement + old_lines[end:after])
            return search, replace
        grow += 1


def _occurrences(context: str, search: str) -> int:
    """How often ``search`` occurs in ``context`` starting at a line start."""
    count, at = 0, context.find(search)
    while at != -1:
        count += at == 0 or context[at - 1] == "\n"
        at = context.find(search, at + 1)
    return count


def _keep_ends(text: str) -> list[str]:
    """Lines with their newline kept; only ``\\n`` ends a line, as in stomper's parser."""
    parts = text.split("\n")
    return [part + "\n" for part in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def _block(path: str, search: str, replace: str) -> str:
    """One SEARCH/REPLACE block of ``path``, as the answer format writes it."""
    return (
        f"{path}\n<<<<<<< SEARCH\n{search}{_newline(search)}=======\n"
        f"{replace}{_newline(replace)}>>>>>>> REPLACE\n"
    )


def _newline(text: str) -> str:
    return "\n" if text and not text.endswith("\n") else ""
