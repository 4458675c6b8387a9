"""Child process body for the crash tests: fix one value of a file in a loop with the production write path.

Runs in a process forked from a forkserver that has already imported the service, so each of the 100
trials starts in milliseconds; the parent kills it with SIGKILL at a random moment.
"""

from __future__ import annotations

import random
import time
from multiprocessing.context import ForkServerContext
from multiprocessing.synchronize import Event
from pathlib import Path

from nanogpt_companion.doctor.finding import PatchOp
from nanogpt_companion.doctor_files import patch_file  # the function every file fix goes through

PPP = ("oai_settings", "custom_prompt_post_processing")


def fix_forever(path: str, ready: Event, key_path: tuple[str, ...] = PPP) -> None:
    """``key_path``: settings.json's PPP by default; a preset's is ``("custom_prompt_post_processing",)``."""
    target = Path(path)
    values = ("", "merge")
    ready.set()
    i = 0
    while True:
        old, new = values[i % 2], values[(i + 1) % 2]
        patch_file(target, [PatchOp(path=key_path, value=new, old=old)])
        i += 1


def kill_mid_fix(
    ctx: ForkServerContext, path: Path, rng: random.Random, key_path: tuple[str, ...] = PPP
) -> int | None:
    """Start ``fix_forever`` on ``path``, let it run a random moment, SIGKILL it; returns its exit code.

    SIGKILL runs no ``finally`` blocks and cleans up no temp file: the worst a crash can do.
    """
    ready = ctx.Event()
    proc = ctx.Process(target=fix_forever, args=(str(path), ready, key_path), daemon=True)
    proc.start()
    assert ready.wait(20)
    time.sleep(rng.uniform(0, 0.02))
    proc.kill()
    proc.join(10)
    return proc.exitcode
