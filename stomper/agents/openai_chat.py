"""The HTTP LLM agent: any OpenAI-compatible chat completions endpoint.

One call of :meth:`OpenAIChatAgent.fix` is one attempt: a fresh conversation holding the
unit's prompt (and the feedback on the previous attempt), one answer, its edits applied to
the workspace strictly (see :mod:`stomper.agents.edits`). Overload (429), server errors and
lost connections are waited out inside the attempt, with backoff; they are not attempts.
With several endpoints (:mod:`stomper.agents.endpoints`) a failed request goes to another
at once, and backoff begins only when none is left to ask.

The API key is read from the environment variable named by ``api_key_env`` and handed to
the client only: it is never stored in settings. Whatever the server sends back passes the
run's redaction (with the key and the password of the base URL in it) before it is put in an
error, in feedback or in a report, and the endpoint is shown with its password masked. A
server may put anything in any field: one the client reads numbers from (``usage``) is
taken for a number only when it is one.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import math
import os
import random
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import openai
from openai.types.chat import ChatCompletion, ChatCompletionMessageParam

from stomper import console, events, redaction
from stomper.agents import AgentOutcome, AgentTask, AttemptFailed, edits
from stomper.agents.adaptive import Adaptive, Sent
from stomper.agents.endpoints import Endpoint, Endpoints
from stomper.agents.prompt import SYSTEM, task_prompt
from stomper.errors import AgentError
from stomper.events import RequestEvent
from stomper.redaction import Redaction, endpoint_urls, secret

if TYPE_CHECKING:
    from stomper.config import Settings

# Local servers (llama.cpp, vLLM, Ollama) take any key, but the client insists on one.
_NO_KEY = "no-key"
_RETRYABLE = frozenset({408, 409, 429})
_OVERLOADED = frozenset({429, 503})
"""What a server answers when it has more requests than it takes."""


@dataclass(frozen=True)
class Answer:
    """A model's answer to :meth:`OpenAIChatAgent.ask`."""

    text: str
    tokens_in: int
    tokens_out: int
    cut_off: bool
    """The answer stopped at the length limit."""


class OpenAIChatAgent:
    """Fixes a unit by asking a chat model for SEARCH/REPLACE edits.

    Counters (``requests``, ``retries``, ``tokens_in``, ``tokens_out``) add up over every
    call, failed attempts included; a failed attempt's tokens also travel on its
    :class:`AttemptFailed`.
    """

    name = "openai"
    needs_tree = False
    reports_tokens = True

    def __init__(
        self,
        *,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        request_timeout: float = 120.0,
        agent_timeout: float = 600.0,
        max_answer_bytes: int = 1_000_000,
        answer_format: str = edits.ANSWER_FORMAT,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        max_retries: int = 10,
        seed: int | None = None,
        adaptive: int | None = None,
    ) -> None:
        """``backoff`` is the first wait after a failed request, doubled after each one up
        to ``max_backoff`` (with jitter); a ``Retry-After`` header replaces it. Waiting
        stops after ``max_retries`` retries, or sooner when ``agent_timeout`` would pass."""
        self.model = model
        self.api_key_env = api_key_env
        self.request_timeout = request_timeout
        self.agent_timeout = agent_timeout
        self.max_answer_bytes = max_answer_bytes
        self.answer_format = answer_format
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_retries = max_retries
        self.requests = 0
        self.retries = 0
        self.tokens_in = 0
        self.tokens_out = 0
        # The run's redaction, and this agent's own secrets should it be made outside a run.
        own = Redaction((secret(f"the API key (${api_key_env})", api_key or ""),))
        for url in endpoint_urls(base_url or ""):
            own |= Redaction.of_url("base_url", url)
        self._redact = redaction.active() | own
        self._random = random.Random(seed)

        def client(url: str | None) -> openai.AsyncOpenAI:
            return openai.AsyncOpenAI(
                base_url=url,
                api_key=api_key or _NO_KEY,
                max_retries=0,
                timeout=request_timeout,
                # No pooled connection outlives its request: nothing stays bound to the
                # event loop of the run, so an agent nobody closes leaks no socket. A
                # handshake per request is small beside a model's answer.
                default_headers={"Connection": "close"},
            )

        window = (lambda: Adaptive(highest=adaptive)) if adaptive is not None else None
        self.endpoints = Endpoints.of(base_url, client, window=window)

    @classmethod
    def from_settings(cls, settings: Settings) -> OpenAIChatAgent:
        """The agent the settings describe; the key comes from ``$<api_key_env>``."""
        if not settings.model:
            raise AgentError(
                "the openai agent needs a model: pass --model NAME "
                "(or set STOMPER_MODEL, or model in [tool.stomper])"
            )
        return cls(
            model=settings.model,
            base_url=settings.base_url,
            api_key=os.environ.get(settings.api_key_env) or None,
            api_key_env=settings.api_key_env,
            request_timeout=settings.request_timeout,
            agent_timeout=settings.agent_timeout,
            max_answer_bytes=settings.max_answer_bytes,
            adaptive=settings.max_parallel_limit if settings.adaptive else None,
        )

    @property
    def endpoint(self) -> str:
        """The base URL requests go to (each of them), as it may be shown: passwords
        masked."""
        return self.endpoints.shown

    def __repr__(self) -> str:
        return f"OpenAIChatAgent(model={self.model!r}, endpoint={self.endpoint!r})"

    async def aclose(self) -> None:
        """Close the clients' connections; the agent is unusable afterwards."""
        await self.endpoints.aclose()

    async def __aenter__(self) -> OpenAIChatAgent:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def fix(self, task: AgentTask) -> AgentOutcome:
        """One attempt: ask the model once (waiting out overload), apply its edits."""
        # A large file is parsed to find the functions to show: off the event loop.
        prompt = await asyncio.to_thread(self._prompt, task)
        reply = await self._reply(SYSTEM, prompt)
        return await self.apply(reply, task.workspace, task.unit.path)

    async def apply(self, reply: Answer, workspace: Path, default_path: str) -> AgentOutcome:
        """Apply the edits of ``reply`` to the files under ``workspace`` (a block that names
        no file edits ``default_path``), strictly, all or none; an answer that holds none that
        apply is an :class:`AttemptFailed` whose feedback says why."""
        try:
            self._bound(reply.text)
            found = edits.parse(reply.text)
            # Matching a block against a large file takes a while: off the event loop. The
            # writing stays here, so an attempt cancelled meanwhile never writes.
            changes = await asyncio.to_thread(edits.prepare, found, workspace, default_path)
        except AttemptFailed as failed:
            feedback = self._redact(failed.feedback)
            if reply.cut_off:
                feedback += (
                    "\nYour answer was cut off at the length limit: answer with fewer, "
                    "smaller blocks."
                )
            raise AttemptFailed(
                feedback, tokens_in=reply.tokens_in, tokens_out=reply.tokens_out
            ) from None
        edits.write(changes)
        return AgentOutcome(tokens_in=reply.tokens_in, tokens_out=reply.tokens_out)

    async def ask(self, system: str, prompt: str) -> Answer:
        """One question outside the fix contract (a review): one answer, overload waited
        out as for a fix; its text is refused past ``max_answer_bytes``."""
        reply = await self._reply(system, prompt)
        try:
            self._bound(reply.text)
        except AttemptFailed as failed:
            raise AttemptFailed(
                failed.feedback, tokens_in=reply.tokens_in, tokens_out=reply.tokens_out
            ) from None
        return reply

    async def _reply(self, system: str, prompt: str) -> Answer:
        """The model's answer to one conversation of ``system`` and ``prompt``; its tokens
        are counted."""
        deadline = time.monotonic() + self.agent_timeout
        messages: list[ChatCompletionMessageParam] = [
            {"role": "system", "content": system},
            {"role": "user", "content": prompt},
        ]
        completion = await self._complete(messages, deadline)
        tokens_in, tokens_out = _usage(completion)
        self.tokens_in += tokens_in
        self.tokens_out += tokens_out
        text, cut_off = _answer(completion)
        return Answer(text, tokens_in, tokens_out, cut_off)

    def _bound(self, answer: str) -> None:
        """Refuse an answer larger than ``max_answer_bytes`` before any of it is parsed or
        matched: the work on an answer grows with its size, and no fix needs megabytes."""
        size = len(answer) if len(answer) > self.max_answer_bytes else len(answer.encode())
        if size > self.max_answer_bytes:
            raise AttemptFailed(
                f"Your answer held {size:,} bytes, more than the {self.max_answer_bytes:,} "
                "allowed (max_answer_bytes), so none of it was applied. Answer with a few "
                "small SEARCH/REPLACE blocks that change only what the diagnostics need."
            )

    def _prompt(self, task: AgentTask) -> str:
        try:
            source = task.file.read_bytes().decode("utf-8", errors="replace")
        except FileNotFoundError:
            source = ""
        return task_prompt(
            task.unit.path,
            task.unit.diagnostics,
            source=source,
            feedback=task.feedback,
            answer_format=self.answer_format,
        )

    async def ready(self) -> None:
        """Before a run: an endpoint must answer and take the key (with several, one that
        does not is said and rests, while the others work). A model it does not list is
        only a warning: servers name models loosely (Ollama lists ``llama3:latest`` and
        serves ``llama3``)."""
        checked = await self._checks()
        usable = [
            (ok, message) for ok, message in checked if ok or "does not list model" in message
        ]
        if not usable:
            raise AgentError(checked[0][1])
        if len(usable) < len(checked):
            for (ok, message), endpoint in zip(checked, self.endpoints.endpoints, strict=True):
                if not ok and "does not list model" not in message:
                    console.warning(f"{message}: its share goes to the other endpoints")
                    self.endpoints.failed(endpoint, rest=True)

    async def check(self) -> tuple[bool, str]:
        """For ``stomper doctor``: whether the endpoints answer and list the model."""
        checked = await self._checks()
        return all(ok for ok, _ in checked), "; ".join(message for _, message in checked)

    async def _checks(self) -> list[tuple[bool, str]]:
        return [
            (ok, self._redact(message))
            for ok, message in await asyncio.gather(
                *(self._check(endpoint) for endpoint in self.endpoints.endpoints)
            )
        ]

    async def _check(self, endpoint: Endpoint) -> tuple[bool, str]:
        timeout = min(self.request_timeout, 30.0)
        shown = endpoint.shown
        try:
            page = await endpoint.client.models.list(timeout=timeout)
        except openai.AuthenticationError:
            return False, f"{shown} refused the API key: set ${self.api_key_env}"
        except openai.APITimeoutError:
            return False, f"{shown} did not answer within {timeout:g}s"
        except openai.APIConnectionError:
            return False, f"cannot reach {shown}: is the server up? (--base-url)"
        except openai.APIStatusError as exc:
            return False, f"{shown} answered GET /models with {exc.status_code}"
        except openai.APIError as exc:
            return False, f"{shown}: {exc.message}"
        served = sorted(str(getattr(model, "id", "")) for model in page.data)
        if self.model in served:
            return True, f"{shown} serves {self.model}"
        listed = ", ".join(served[:10]) + (", ..." if len(served) > 10 else "")
        return False, (
            f"{shown} does not list model {self.model!r} "
            f"(it lists: {listed or 'nothing'}): pass another --model"
        )

    async def _complete(
        self, messages: list[ChatCompletionMessageParam], deadline: float
    ) -> ChatCompletion:
        """One chat completion, retried through overload and lost connections."""
        failures: list[str] = []
        while True:
            left = deadline - time.monotonic()
            timeout = min(self.request_timeout, left)
            if timeout <= 0:
                raise AttemptFailed(f"no time was left for the model ({self.agent_timeout:g}s)")
            self.requests += 1
            endpoint = self.endpoints.choose()
            try:
                with self.endpoints.asking(endpoint):
                    completion = await self._create(endpoint, messages, seconds=timeout)
                self.endpoints.answered(endpoint)
                return completion
            except openai.APITimeoutError:
                self.endpoints.failed(endpoint)
                raise AttemptFailed(
                    f"The model did not answer within {timeout:g}s. Answer with fewer, "
                    "smaller SEARCH/REPLACE blocks."
                ) from None
            except openai.APIStatusError as exc:
                if exc.status_code not in _RETRYABLE and exc.status_code < 500:
                    raise self._refused(exc, endpoint) from None
                failures.append(str(exc.status_code))
                advised = _retry_after(exc.response.headers)
            except openai.APIConnectionError:
                failures.append("connection error")
                advised = None
            except openai.APIError as exc:
                raise AgentError(f"{endpoint.shown}: {self._redact(exc.message)}") from None
            self.endpoints.failed(endpoint)
            # Another endpoint is asked at once; the same one again only after a wait.
            wait = (
                0.0 if self.endpoints.others_awake(endpoint) else self._wait(len(failures), advised)
            )
            if len(failures) > self.max_retries or time.monotonic() + wait >= deadline:
                raise AgentError(
                    f"{self.endpoint} kept failing ({_tally(failures)}); "
                    f"gave up after {len(failures)} tries"
                )
            self.retries += 1
            await asyncio.sleep(wait)

    async def _create(
        self, endpoint: Endpoint, messages: list[ChatCompletionMessageParam], seconds: float
    ) -> ChatCompletion:
        """One request, through the endpoint's window when it has one (``-j auto``), which
        learns from its answer; the ops log gets how it ended."""
        window = endpoint.window
        async with window.request() if window is not None else _no_window() as sent:
            began = time.monotonic()
            try:
                completion = await endpoint.client.chat.completions.create(
                    model=self.model, messages=messages, timeout=seconds
                )
            except openai.APITimeoutError:  # before its base class, a connection error
                _logged(endpoint, "timeout", began)
                if window is not None and sent is not None:
                    window.overloaded(sent)
                raise
            except openai.APIStatusError as exc:
                _logged(endpoint, str(exc.status_code), began)
                if window is not None and sent is not None and exc.status_code in _OVERLOADED:
                    window.overloaded(sent)
                raise
            except openai.APIConnectionError:
                _logged(endpoint, "connection error", began)
                raise
            _logged(endpoint, "200", began, *_usage(completion))
            if window is not None and sent is not None:
                window.answered(sent)
            return completion

    def _wait(self, failures: int, advised: float | None) -> float:
        """Seconds before the next try: the server's advice, else exponential with jitter."""
        if advised is not None:
            # A little spread keeps the units that were refused together from returning so.
            return advised + self._random.uniform(0, min(advised, 1.0) * 0.1)
        ceiling = min(self.max_backoff, self.backoff * 2.0 ** (failures - 1))
        return ceiling / 2 + self._random.uniform(0, ceiling / 2)

    def _refused(self, exc: openai.APIStatusError, endpoint: Endpoint) -> AgentError:
        status = exc.status_code
        if status in (401, 403):
            return AgentError(
                f"{endpoint.shown} refused the API key ({status}): "
                f"set ${self.api_key_env} to a key it accepts"
            )
        if status == 404:
            return AgentError(
                f"{endpoint.shown} answered 404 for model {self.model!r}: "
                "check --model and --base-url"
            )
        return AgentError(f"{endpoint.shown} refused the request: {self._redact(exc.message)}")


@contextlib.asynccontextmanager
async def _no_window() -> AsyncIterator[Sent | None]:
    yield None


def _logged(
    endpoint: Endpoint, status: str, began: float, tokens_in: int = 0, tokens_out: int = 0
) -> None:
    """Give the run's ops log one request: where it went, how it ended, how long it took."""
    seconds = time.monotonic() - began
    events.record(RequestEvent(endpoint.shown, status, seconds, tokens_in, tokens_out))


def _usage(completion: ChatCompletion) -> tuple[int, int]:
    """The tokens in and out the answer reports; what is not a count of them counts 0 (token
    use is reported, never relied on)."""
    usage = getattr(completion, "usage", None)
    return _count(getattr(usage, "prompt_tokens", 0)), _count(
        getattr(usage, "completion_tokens", 0)
    )


def _count(value: object) -> int:
    if isinstance(value, float) and math.isfinite(value):
        return max(0, int(value))
    if isinstance(value, int) and not isinstance(value, bool):
        return max(0, value)
    return 0


def _answer(completion: ChatCompletion) -> tuple[str, bool]:
    """The answer's text, and whether it was cut off at the length limit."""
    choices = getattr(completion, "choices", None)
    if not isinstance(choices, list) or not choices:
        return "", False
    message = getattr(choices[0], "message", None)
    content = getattr(message, "content", None)
    cut_off = getattr(choices[0], "finish_reason", None) == "length"
    return (content if isinstance(content, str) else ""), cut_off


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """The wait a response advises, from ``retry-after-ms`` or ``retry-after`` (seconds or
    an HTTP date)."""
    milliseconds = headers.get("retry-after-ms")
    if milliseconds:
        try:
            return max(0.0, float(milliseconds) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _tally(failures: list[str]) -> str:
    counts: dict[str, int] = {}
    for failure in failures:
        counts[failure] = counts.get(failure, 0) + 1
    return ", ".join(f"{name} x{count}" if count > 1 else name for name, count in counts.items())
