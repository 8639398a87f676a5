"""Parsing Python source with :mod:`ast`, safe from several threads at once.

CPython before 3.13 keeps the depth counter of its AST constructor in the interpreter, shared
by every thread: two threads parsing at once (two agents' prompts; the fake server beside a
unit; :func:`inspect.signature` of a built-in, which parses its text signature, as LangGraph's
loading does in a thread of its own) can fail with ``SystemError: AST constructor recursion
depth mismatch``. The parses made here take turns under one lock, which costs nothing they
did not already pay (a parse holds the GIL), and one that a parse elsewhere upset is made
again: each parse starts the counter afresh.
"""

from __future__ import annotations

import ast
import threading
import warnings

# Reentrant: a finalizer the collector runs inside a parse may parse too.
_ONE_AT_A_TIME = threading.RLock()
_TRIES = 5


def parse(source: str) -> ast.Module:
    """``ast.parse(source)``, one thread at a time, without the parser's warnings (an invalid
    escape in a string is the file's business, not this tool's to say).

    Raises what ``ast.parse`` raises: SyntaxError, ValueError (a NUL byte, on early 3.11),
    RecursionError (nesting too deep).
    """
    with _ONE_AT_A_TIME, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(_TRIES - 1):
            try:
                return ast.parse(source)
            except SystemError as exc:
                if "recursion depth mismatch" not in str(exc):
                    raise
        return ast.parse(source)
