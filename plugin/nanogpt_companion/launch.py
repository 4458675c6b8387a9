"""The command's entry point (``nanogpt-companion``, ``python -m nanogpt_companion``).

``serve`` starts over lean before anything heavy is imported: ``cli`` imports pydantic and aiohttp, and
restarting after that would pay for them twice at every start.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence


def restart_without_docstrings(args: Sequence[str]) -> None:
    """Run ``python -OO -P -m nanogpt_companion <args>`` in place of this process (same process id);
    returns only where that is not done: already optimised, on Windows (no in-place exec), or without an
    interpreter path.

    Why: the service's docstrings explain its code to readers and are never read while it runs; loaded,
    they are ~1.4 MB of its idle memory (measured with ten users). ``-OO`` leaves them (and asserts, which
    this package does not use) out. ``-P`` keeps the working directory off the import path, as the console
    script does; the interpreter's ``-W``/``-X`` options are passed on.
    """
    if sys.flags.optimize >= 2 or os.name == "nt" or not sys.executable:
        return
    options = [f"-W{w}" for w in sys.warnoptions] + [
        f"-X{name}" if value is True else f"-X{name}={value}" for name, value in sys._xoptions.items()
    ]
    command = [sys.executable, *options, "-OO", "-P", "-m", "nanogpt_companion", *args]
    try:
        os.execv(sys.executable, command)  # noqa: S606 - our own interpreter and arguments, no shell
    except OSError as exc:  # no such interpreter any more, or exec refused: run on as we are
        print(f"note: could not restart with -OO ({exc}); running as started", file=sys.stderr)


def main() -> int:
    if sys.argv[1:2] == ["serve"]:
        restart_without_docstrings(sys.argv[1:])
    from nanogpt_companion.cli import main as cli_main  # noqa: PLC0415 - after the restart, not before

    return cli_main()
