"""Synthetic repositories for the benchmarks, generated locally in seconds.

Two shapes: :func:`synthetic_repo`, where every file is a unit whose diagnostics ruff's safe
fixes resolve (so every unit is fixed and lands), and :func:`sympy_sized_repo`, a tree the
size of a large real project (about 2,000 files and 35 MB) where most files are clean and a
few hundred carry diagnostics.
"""

from __future__ import annotations

import random
from pathlib import Path

from stomper.testing.repos import FIXABLE, RUFF_CONFIG, make_repo, module

# Files per package folder: a flat folder of 10,000 files would measure the file system.
PER_PACKAGE = 100


def unit_path(number: int) -> str:
    return f"pkg{number // PER_PACKAGE:03d}/mod_{number:05d}.py"


def fixable_module(rng: random.Random) -> str:
    """A module with one to three diagnostics that ruff's safe fixes all resolve."""
    codes = sorted(rng.sample(sorted(FIXABLE), rng.randint(1, 3)))
    return module(codes)


def synthetic_files(units: int, *, seed: int = 11, padding_kb: float = 0.0) -> dict[str, str]:
    """``units`` files, each one fully fixable unit, spread over packages of 100; each
    with about ``padding_kb`` KB of clean functions after its diagnostics."""
    rng = random.Random(seed)
    files = {"pyproject.toml": RUFF_CONFIG}
    blocks = round(padding_kb * 1000 / _BLOCK)
    for number in range(units):
        path = unit_path(number)
        files.setdefault(path.rsplit("/", 1)[0] + "/__init__.py", "")
        files[path] = fixable_module(rng)
        if blocks:
            files[path] += "\n\n" + _filler(f"fn_{number}", blocks)
    return files


def synthetic_repo(root: Path, units: int, *, seed: int = 11, padding_kb: float = 0.0) -> Path:
    """A repository at ``root`` with ``units`` fixable files (padded as
    :func:`synthetic_files` says)."""
    files = synthetic_files(units, seed=seed, padding_kb=padding_kb)
    return make_repo(root, files, message="synthetic project")


def _filler(prefix: str, count: int) -> str:
    """``count`` clean, distinct functions (about 330 bytes each)."""
    blocks = []
    for number in range(count):
        name = f"{prefix}_{number}"
        blocks.append(
            f"def {name}(value: int, scale: int = {number % 13 + 1}) -> int:\n"
            f'    """Scale ``value`` by ``scale`` and add the first steps: {name}."""\n'
            f"    total = value * scale\n"
            f"    for step in range({number % 7 + 1}):\n"
            f"        total += step * {number % 5 + 1}\n"
            f"    return total\n"
        )
    return "\n\n".join(blocks)


def sympy_sized_files(
    files: int = 2000, *, megabytes: float = 35.0, dirty: int = 300, seed: int = 13
) -> dict[str, str]:
    """About ``megabytes`` of Python in ``files`` files, ``dirty`` of them with diagnostics.

    File sizes follow a log-normal spread (a few large modules, many small ones), as in
    real projects.
    """
    rng = random.Random(seed)
    mean_blocks = megabytes * 1e6 / files / _BLOCK
    weights = [rng.lognormvariate(0.0, 0.8) for _ in range(files)]
    scale = mean_blocks * files / sum(weights)
    dirty_numbers = set(rng.sample(range(files), min(dirty, files)))
    out = {"pyproject.toml": RUFF_CONFIG}
    for number, weight in enumerate(weights):
        path = unit_path(number)
        out.setdefault(path.rsplit("/", 1)[0] + "/__init__.py", "")
        body = _filler(f"fn_{number}", max(1, round(weight * scale)))
        if number in dirty_numbers:
            out[path] = fixable_module(rng) + "\n\n" + body
        else:
            out[path] = f'"""Generated module {number}."""\n\n\n' + body
    return out


def sympy_sized_repo(
    root: Path, files: int = 2000, *, megabytes: float = 35.0, dirty: int = 300
) -> Path:
    return make_repo(
        root,
        sympy_sized_files(files, megabytes=megabytes, dirty=dirty),
        message="sympy-sized project",
    )


def tree_size(files: dict[str, str]) -> int:
    return sum(len(content.encode()) for content in files.values())


# A filler block's size with a name of typical length, and the blank lines between blocks.
_BLOCK = len(_filler("fn_1000", 50)) / 50 + 2
