"""Runs ``git checkout -b agent-branch``: in its own repository, then in the user's.

Seen in a linked worktree (shared refs): the branch was left in the user's repository.
"""

from __future__ import annotations

import sys

from attack import checkout, fix, git

fix(sys.argv[-1])
git("checkout", "-q", "-b", "agent-branch")
switched, _ = git("-C", str(checkout()), "checkout", "-q", "-b", "agent-branch")
print(f"switched the user's checkout to agent-branch: {switched}", file=sys.stderr)
