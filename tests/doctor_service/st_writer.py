"""Stand-alone writer for the race test: plays SillyTavern saving settings.json over and over.

Run as ``python st_writer.py SETTINGS N SEED``. Each save is a temp file + rename (write-file-atomic's
way); the contents cycle through three variants (two broken with different models, so every broken save
is a new situation the service must fix, and one healthy), each carrying a unique marker. Prints the
index of the last write when done. Only the standard library, so it starts fast.
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


def variant(base: dict[str, Any], i: int) -> bytes:
    data = json.loads(json.dumps(base))
    oai = data["oai_settings"]
    oai["nanogpt_model"] = MODELS[i % 3]
    oai["custom_prompt_post_processing"] = "merge" if i % 3 == 2 else ""
    data["race_marker"] = i
    return json.dumps(data, indent=4, ensure_ascii=False).encode("utf-8")


def main() -> int:
    path, count, seed = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    base = json.loads(path.read_bytes())
    rng = random.Random(seed)
    for i in range(count):
        tmp = path.with_name(f"settings.json.{os.getpid()}.{i}")
        tmp.write_bytes(variant(base, i))
        os.replace(tmp, path)
        time.sleep(rng.uniform(0, 0.006))
    print(count - 1, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
