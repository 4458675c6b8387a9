"""Stand-alone writer for the race tests: plays SillyTavern saving one file over and over.

Run as ``python racing_st_writer.py settings|preset|profile PATH N SEED``. Each save is a temp file +
rename (write-file-atomic's way). ``settings`` rewrites settings.json's own PPP; ``preset`` rewrites a
Chat Completion preset; ``profile`` rewrites settings.json with a Connection Manager profile. Two saves
in three carry a bad Prompt Post-Processing the service should fix, one a healthy value; every save
carries a unique marker, and the model cycles so consecutive broken saves are different situations.
Prints the index of the last write. Only the standard library, so it starts fast and shares nothing
with the service under test.

``python racing_st_writer.py timed settings|preset|profile PATH SECONDS SEED`` saves every 0-20 ms for
SECONDS and checks each save survived: just before the next save it reads the file back, and a marker
older than its last save (still older 20 ms later, so not a transient) counts as a lost save. Prints
``{"saves": N, "lost": K, "lost_markers": [...]}`` as JSON.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

MODELS = ("openai/gpt-4o-mini", "openai/gpt-5.2", "anthropic/claude-opus-4.6")
PRESET_PPP = "custom_prompt_post_processing"
PROFILE_PPP = "prompt-post-processing"


def broken(i: int) -> bool:
    return i % 3 != 2


def settings_variant(base: dict[str, Any], i: int) -> bytes:
    """settings.json saved with a bad PPP for NanoGPT two times in three."""
    data = json.loads(json.dumps(base))
    oai = data["oai_settings"]
    oai["nanogpt_model"] = MODELS[i % 3]
    oai["custom_prompt_post_processing"] = "merge" if i % 3 == 2 else ""
    data["race_marker"] = i
    return json.dumps(data, indent=4, ensure_ascii=False).encode("utf-8")


def preset_variant(base: dict[str, Any], i: int) -> bytes:
    """A preset saved while connected to NanoGPT (so selecting it switches NanoGPT's PPP)."""
    data = json.loads(json.dumps(base))
    data["chat_completion_source"] = "nanogpt"
    data["nanogpt_model"] = MODELS[i % 3]
    data[PRESET_PPP] = "" if broken(i) else "merge"
    data["race_marker"] = i
    return json.dumps(data, indent=4, ensure_ascii=False).encode("utf-8")


def profile_variant(base: dict[str, Any], i: int) -> bytes:
    """settings.json whose NanoGPT profile would reset PPP to "None" ("none" is how profiles store it)."""
    data = json.loads(json.dumps(base))
    data["oai_settings"]["nanogpt_model"] = MODELS[i % 3]
    data["extension_settings"]["connectionManager"]["profiles"] = [
        {
            "id": "race-profile",
            "mode": "cc",
            "name": "NanoGPT",
            "api": "nanogpt",
            "model": MODELS[i % 3],
            PROFILE_PPP: "none" if broken(i) else "merge",
            "exclude": [],
        }
    ]
    data["race_marker"] = i
    return json.dumps(data, indent=4, ensure_ascii=False).encode("utf-8")


VARIANTS = {"settings": settings_variant, "preset": preset_variant, "profile": profile_variant}


def _marker(path: Path) -> int | None:
    try:
        return int(json.loads(path.read_bytes()).get("race_marker", -1))
    except (OSError, ValueError):
        return None  # unreadable: counted as not our save


def timed(mode: str, path: Path, seconds: float, seed: int) -> int:
    make = VARIANTS[mode]
    base = json.loads(path.read_bytes())
    # The variants only depend on i % 3 and the marker: serialise three templates once, so a save costs
    # what ST's costs (writing the bytes) even for a settings file of several hundred KB.
    templates = [make(base, r).split(f'"race_marker": {r}'.encode()) for r in range(3)]
    assert all(len(parts) == 2 for parts in templates)
    rng = random.Random(seed)
    lost: list[int] = []
    deadline = time.monotonic() + seconds
    i = 0
    while time.monotonic() < deadline:
        tmp = path.with_name(f"{path.name}.{os.getpid()}.{i}")
        head, tail = templates[i % 3]
        tmp.write_bytes(head + f'"race_marker": {i}'.encode() + tail)
        os.replace(tmp, path)
        time.sleep(rng.uniform(0, 0.020))
        if _marker(path) != i:
            time.sleep(0.020)  # a fix being put back is visible for microseconds; a lost save stays lost
            if _marker(path) != i:
                lost.append(i)
        i += 1
    print(json.dumps({"saves": i, "lost": len(lost), "lost_markers": lost[:50]}), flush=True)
    return 0


def main() -> int:
    if sys.argv[1] == "timed":
        return timed(sys.argv[2], Path(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]))
    mode, path, count, seed = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    make = VARIANTS[mode]
    base = json.loads(path.read_bytes())
    rng = random.Random(seed)
    for i in range(count):
        tmp = path.with_name(f"{path.name}.{os.getpid()}.{i}")
        tmp.write_bytes(make(base, i))
        os.replace(tmp, path)
        time.sleep(rng.uniform(0, 0.006))
    print(count - 1, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
