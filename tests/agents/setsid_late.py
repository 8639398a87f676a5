"""Leaves a ``setsid`` grandchild behind, out of its process group, that writes into the
user's checkout once the run is over (once its workspace is gone), then stays alive.

Seen: it escaped the timeout's kill of the process group and wrote 8 s after the run
ended. Its argv holds TOKEN, so a test can look for it.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from attack import checkout, fix

token, file = sys.argv[-2], sys.argv[-1]
fix(file)
workspace, user = Path.cwd(), checkout()
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        quiet = os.open(os.devnull, os.O_RDWR)
        for stream in (0, 1, 2):
            os.dup2(quiet, stream)
        os.execv(
            sys.executable,
            [
                sys.executable,
                "-c",
                "import os, sys, time\n"
                "while os.path.exists(sys.argv[1]):\n"
                "    time.sleep(0.01)\n"
                "try:\n"
                "    with open(os.path.join(sys.argv[2], 'b.py'), 'a') as out:\n"
                "        out.write('LATE = True\\n')\n"
                "except OSError:\n"
                "    pass\n"
                "while True:\n"
                "    time.sleep(60)\n",
                str(workspace),
                str(user),
                token,
            ],
        )
    os._exit(0)
time.sleep(0.1)
