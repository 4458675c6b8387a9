"""Writes stay inside the folder they belong to, whatever symlinks on the way say.

Whoever can create files in ST's data root can plant links: a ``settings.json``, a preset, the
``OpenAI Settings`` or ``user`` folder pointing at another user's folder or anywhere on the disk. ST
follows such links itself, so reading through them changes nothing; writing through them would let the
planter make the service patch or create files it has no business touching. Every write therefore
resolves the real path first and refuses one outside the real path of the user's own folder.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import UnsafeLink


def confined(path: Path, within: Path, *, follow_final: bool = True) -> Path:
    """The real path a write to ``path`` would reach; ``UnsafeLink`` when it leaves ``within``.

    ``follow_final=False`` for files we own (a link in their place is replaced, not followed): only the
    folders on the way are resolved then.
    """
    folder = Path(os.path.realpath(within))
    real = Path(os.path.realpath(path if follow_final else path.parent))
    if not follow_final:
        real = real / path.name
    if real == folder or not real.is_relative_to(folder):
        raise UnsafeLink(path, real, folder)
    return real
