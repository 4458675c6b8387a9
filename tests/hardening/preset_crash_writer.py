"""Child process body for the preset crash test: fix a preset in a loop with the production write path.

Runs in a process forked from a forkserver that has already imported the service, so each trial starts
in milliseconds; the parent kills it with SIGKILL at a random moment.
"""

from __future__ import annotations

from multiprocessing.synchronize import Event
from pathlib import Path

from nanogpt_companion.doctor.finding import PatchOp
from nanogpt_companion.doctor_service import _patch_file  # the function preset fixes go through

# A preset's PPP sits at the top level of the file (the ``preset.ppp`` rule's patch path).
PRESET_PPP = ("custom_prompt_post_processing",)


def fix_forever(path: str, ready: Event) -> None:
    target = Path(path)
    values = ("", "merge")
    ready.set()
    i = 0
    while True:
        old, new = values[i % 2], values[(i + 1) % 2]
        _patch_file(target, [PatchOp(path=PRESET_PPP, value=new, old=old)])
        i += 1
