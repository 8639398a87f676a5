"""stomper: run AI coding agents over a whole repository in parallel and land their work safely."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
