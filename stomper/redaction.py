"""The secrets a run is given, and the one redaction that keeps them inside the process.

A run knows three: the API key (the value of the variable ``api_key_env`` names), the
password of ``base_url`` and that of the ``checkpointer`` URL. Each can come back from where
stomper does not control it: a server quotes a refused key in its error or echoes it in a
field the client parses, a model copies it into its edit, a URL carries its password into a
message. So every text that leaves the process passes one :class:`Redaction`, built once per
run from the settings: what is printed on stderr, the ``--json`` document on stdout, the
journal's files, the ops log, crash logs, and the feedback an agent is given. A change that
writes a secret into a file is refused (see :meth:`Redaction.written`), and a URL is recorded
and shown with its passwords masked, the real one being read again from the settings when a
run resumes (:func:`resume_url`).

The run's redaction is the process's: :func:`use` sets it once the command knows its settings,
and every door out of the process calls :func:`redact`.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from stomper.errors import ConfigError

if TYPE_CHECKING:
    from stomper.config import Settings

MASK = "***"
MIN_LENGTH = 4
"""A secret shorter than this is masked in URLs but not searched for in other text: its
letters would be found in ordinary words, and an empty one between every two characters."""
# libpq reads these from a URL's query as well as from its user information.
_SECRET_PARAMETERS = frozenset({"password", "sslpassword"})
_URL_SETTINGS = ("base_url", "checkpointer")


@dataclass(frozen=True)
class Secret:
    name: str
    """What it is, for a message that must not show it: ``the API key ($OPENAI_API_KEY)``."""
    forms: tuple[str, ...]
    """The spellings it may appear in, each long enough to search for."""


def secret(name: str, *forms: str) -> Secret:
    """The secret ``name``, known by ``forms``; those shorter than MIN_LENGTH are left out."""
    return Secret(name, tuple(sorted({form for form in forms if len(form) >= MIN_LENGTH})))


@dataclass(frozen=True)
class Redaction:
    """What must not leave the process, and how each is shown instead."""

    secrets: tuple[Secret, ...] = ()
    urls: tuple[str, ...] = ()
    """URLs holding a password: wherever one appears whole it is shown masked, so that a
    password too short to search for is hidden there at least."""

    @classmethod
    def of(cls, settings: Settings, environ: Mapping[str, str] = os.environ) -> Redaction:
        """The secrets ``settings`` configure: the key in ``$api_key_env``, the passwords of
        the URLs."""
        name = settings.api_key_env
        key = secret(f"the API key (${name})", environ.get(name, ""))
        redaction = cls((key,) if key.forms else ())
        for name in _URL_SETTINGS:
            value = getattr(settings, name)
            if value:
                urls = endpoint_urls(value) if name == "base_url" else [value]
                for url in urls:
                    redaction |= cls.of_url(name, url)
        return redaction

    @classmethod
    def of_url(cls, name: str, url: str) -> Redaction:
        """The passwords of ``url``, the setting ``name``."""
        passwords = url_secrets(url)
        found = secret(f"the password of {name}", *passwords)
        return cls((found,) if found.forms else (), (url,) if passwords else ())

    def __or__(self, other: Redaction) -> Redaction:
        return Redaction(self.secrets + other.secrets, self.urls + other.urls)

    def __call__(self, text: str) -> str:
        """``text`` with every secret in it masked (and each URL that holds one)."""
        for needle, shown in self._replacements:
            if needle in text:
                text = text.replace(needle, shown)
        return text

    def value(self, data: Any) -> Any:
        """A JSON-like value (dicts, lists, strings) with every string in it redacted."""
        if not self._replacements:
            return data
        if isinstance(data, str):
            return self(data)
        if isinstance(data, Mapping):
            return {self.value(key): self.value(item) for key, item in data.items()}
        if isinstance(data, list | tuple):
            return [self.value(item) for item in data]
        return data

    def written(self, before: bytes, after: bytes) -> str | None:
        """Why a file that held ``before`` must not become ``after``: it writes a secret
        that was not in it (one that was, the user put there)."""
        for known in self.secrets:
            for form in known.forms:
                encoded = form.encode()
                if after.count(encoded) > before.count(encoded):
                    return f"the change writes {known.name} into the file: a secret never lands"
        return None

    @cached_property
    def _replacements(self) -> tuple[tuple[str, str], ...]:
        """(text, what it is shown as), longest first, so that no secret is left in part."""
        pairs = {url: mask_url(url) for url in self.urls}
        pairs |= {form: MASK for known in self.secrets for form in known.forms}
        return tuple(sorted(pairs.items(), key=lambda pair: len(pair[0]), reverse=True))


_active = Redaction()


def use(redaction: Redaction) -> None:
    """Make ``redaction`` the one every text leaving the process passes, from now on."""
    global _active
    _active = redaction


def active() -> Redaction:
    return _active


def redact(text: str) -> str:
    """``text`` as it may leave the process."""
    return _active(text)


def endpoint_urls(base_url: str) -> list[str]:
    """The endpoints a ``base_url`` names: one URL, or several separated by commas."""
    return [part.strip() for part in base_url.split(",") if part.strip()]


def mask_setting(key: str, value: str) -> str:
    """The URL (or, for ``base_url``, the URLs) of setting ``key``, each password masked."""
    if key == "base_url":
        return ",".join(mask_url(url) for url in endpoint_urls(value))
    return mask_url(value)


def mask_url(url: str) -> str:
    """``url`` with every password in it replaced by ``***``; all of it if it is no URL."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        return MASK
    authority, slash, tail = _split_authority(rest)
    user_info, at, hosts = authority.rpartition("@")
    if at and ":" in user_info:
        authority = f"{user_info.partition(':')[0]}:{MASK}@{hosts}"
    head, question, query = tail.partition("?")
    if question:
        query = "&".join(
            f"{key}={MASK}" if unquote(key) in _SECRET_PARAMETERS else f"{key}{equals}{value}"
            for key, equals, value in (part.partition("=") for part in query.split("&"))
        )
    return f"{scheme}://{authority}{slash}{head}{question}{query}"


def url_secrets(url: str) -> set[str]:
    """The passwords ``url`` holds, as written, as decoded, and as the HTTP basic credentials
    a client sends for them (which a server may quote back); all of it if it is no URL."""
    _, separator, rest = url.partition("://")
    if not separator:
        return {url} if url else set()
    authority, _, tail = _split_authority(rest)
    user_info, at, _ = authority.rpartition("@")
    found = set()
    if at and ":" in user_info:
        user, _, password = user_info.partition(":")
        found.add(password)
        credentials = f"{unquote(user)}:{unquote(password)}".encode()
        found.add(base64.b64encode(credentials).decode())
    for part in tail.partition("?")[2].split("&"):
        key, _, value = part.partition("=")
        if unquote(key) in _SECRET_PARAMETERS:
            found.add(value)
    return {form for secret in found for form in (secret, unquote(secret)) if form}


def _split_authority(rest: str) -> tuple[str, str, str]:
    """``user:password@hosts``, the ``/`` after it, and the rest of the URL."""
    # A password may hold a '/' or '?' only encoded, so the authority ends at the first one.
    match = re.match(r"([^/?]*)(/?)(.*)", rest, re.DOTALL)
    assert match is not None
    authority, slash, tail = match.groups()
    return authority, slash, tail


def resume_url(run_id: str, key: str, recorded: str, configured: str | None) -> str:
    """The real URL of setting ``key`` that run ``run_id`` started with.

    ``recorded`` is the masked URL of the run's journal, ``configured`` the URL the settings
    give now. A run whose URL held a password needs the settings to give it again.
    """
    if configured is not None and mask_setting(key, configured) == recorded:
        return configured
    urls = endpoint_urls(recorded) if key == "base_url" else [recorded]
    if not any(url_secrets(url) for url in urls):
        return recorded
    elsewhere = "" if configured is None else f", not {mask_setting(key, configured)}"
    raise ConfigError(
        f"run {run_id} was started with {key} {recorded}{elsewhere}: set "
        f"STOMPER_{key.upper()} or [tool.stomper] {key} to that URL, password included"
    )
