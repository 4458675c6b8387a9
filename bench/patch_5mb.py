"""Patch time for a 5 MB settings.json through the production path, against a full parse + re-dump.

Usage: python bench/patch_5mb.py [--runs N]. Prints a table and a final ``BENCH_JSON {...}`` line.
The production path is ``doctor_files.patch_file``: read + hash, splice the one value, re-check the
hash, temp file + fsync + rename. The baseline is what a naive fixer would do: ``json.loads`` +
``json.dumps(indent=4)`` of the same file (no I/O), measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "plugin")]

from tests.fixtures import ST_FIXTURES  # noqa: E402

from nanogpt_companion.doctor.finding import PatchOp  # noqa: E402
from nanogpt_companion.doctor_files import patch_file  # noqa: E402
from nanogpt_companion.sillytavern.documents import read_document  # noqa: E402
from nanogpt_companion.sillytavern.patching import PatchEdit, patched_text  # noqa: E402
from nanogpt_companion.sillytavern.stjson import dumps_st  # noqa: E402

FIXTURE = ST_FIXTURES / "settings.nanogpt-source-selected.json"
PPP = ("oai_settings", "custom_prompt_post_processing")
TARGET_MS = 100.0


def build(path: Path, size: int) -> None:
    data = json.loads(FIXTURE.read_text(encoding="utf-8"))
    data["oai_settings"]["custom_prompt_post_processing"] = ""
    # Realistic bulk: many small objects (extension data, quick replies), with unicode and escapes.
    n = size // 190  # ~190 bytes per entry once laid out with 4-space indents
    data["extension_settings"]["bulk"] = [
        {"id": i, "text": f'entry {i} ünï "q" \\ {i * 1e-7}', "tags": [], "on": i % 2 == 0} for i in range(n)
    ]
    path.write_text(dumps_st(data), encoding="utf-8")


def ms(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered) * 1000, ordered[int(0.95 * (len(ordered) - 1))] * 1000


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--size-mb", type=float, default=5.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "settings.json"
        build(path, int(args.size_mb * 1024 * 1024))
        size = path.stat().st_size
        patch_times, splice_times, naive_times = [], [], []
        values = ("", "merge")
        for i in range(args.runs):
            old, new = values[i % 2], values[(i + 1) % 2]
            t0 = time.perf_counter()
            assert patch_file(path, [PatchOp(path=PPP, value=new, old=old)]) is not None
            patch_times.append(time.perf_counter() - t0)

            doc = read_document(path)
            t0 = time.perf_counter()
            patched_text(doc, [PatchEdit(PPP, "x")])
            splice_times.append(time.perf_counter() - t0)

            raw = path.read_text(encoding="utf-8")
            t0 = time.perf_counter()
            data = json.loads(raw)
            data["oai_settings"]["custom_prompt_post_processing"] = "x"
            json.dumps(data, indent=4, ensure_ascii=False)
            naive_times.append(time.perf_counter() - t0)
    patch_med, patch_p95 = ms(patch_times)
    splice_med, _ = ms(splice_times)
    naive_med, naive_p95 = ms(naive_times)
    print(f"settings.json size: {size / 1048576:.2f} MB, {args.runs} runs")
    print(f"{'measure':<44}{'median ms':>12}{'p95 ms':>10}")
    print(f"{'production patch (read+CAS+fsync+rename)':<44}{patch_med:>12.1f}{patch_p95:>10.1f}")
    print(f"{'  of which splice only (patched_text)':<44}{splice_med:>12.1f}{'':>10}")
    print(f"{'baseline json.loads + json.dumps (no I/O)':<44}{naive_med:>12.1f}{naive_p95:>10.1f}")
    ratio = naive_med / patch_med if patch_med else float("inf")
    verdict = "met" if patch_med < TARGET_MS else "MISSED"
    print(f"baseline / production = {ratio:.2f}x; target < {TARGET_MS:.0f} ms: {verdict}")
    figures = {
        "bench": "patch_5mb",
        "size_bytes": size,
        "runs": args.runs,
        "patch_median_ms": round(patch_med, 2),
        "patch_p95_ms": round(patch_p95, 2),
        "splice_median_ms": round(splice_med, 2),
        "baseline_loads_dumps_median_ms": round(naive_med, 2),
        "ratio_baseline_over_patch": round(ratio, 2),
        "target_ms": TARGET_MS,
        "target_met": patch_med < TARGET_MS,
    }
    print("BENCH_JSON " + json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
