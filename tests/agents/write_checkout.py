"""Writes into the user's checkout by its absolute path: edits a tracked file, adds one.

Seen: left behind, undetected, exit 0.
"""

from __future__ import annotations

import sys

from attack import attempt, checkout, fix


def edit() -> None:
    with (checkout() / "b.py").open("a", encoding="utf-8") as handle:
        handle.write("import os  # written by the agent into your checkout\n")


def add() -> None:
    (checkout() / "planted.py").write_text("print('planted by the agent')\n")


fix(sys.argv[-1])
attempt("edit the user's b.py", edit)
attempt("add planted.py to the user's checkout", add)
