"""How long the batch plan of a 100 h corpus takes: `plan_epoch` (a batch at a time, NumPy) against
filling batches clip by clip in Python (the loop it replaced), side by side in one process, on the
durations of a real scale manifest, with the padding a Moonshine run plans with (length buckets). The plan is computed before the first optimizer step (twice: once
for the epoch's batch count, once by the loader), so its time is start-up time.

    uv run python benchmarks/batch_plan.py [--manifest data/scale_100h.jsonl] [--repeats 3]

Writes benchmarks/results/batch_plan.json atomically. Both sides must give the same plan (checked).
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from pathlib import Path

import numpy as np

from lora.core.outputs import write_json_atomic
from lora.data_loader import _bucketed_seconds, plan_epoch
from lora.families import family_for

ROOT = Path(__file__).resolve().parents[1]


def clip_by_clip(seconds: np.ndarray, batch_size: int, max_batch_seconds: float, pad) -> list[list[int]]:
    """The previous `plan_epoch`: rows in duration order, each added to the open batch or closing it."""
    batches: list[list[int]] = []
    current: list[int] = []
    for i in np.argsort(seconds, kind="stable").tolist():
        cost = (len(current) + 1) * pad(float(seconds[i]))
        if current and (len(current) >= batch_size or (max_batch_seconds > 0 and cost > max_batch_seconds)):
            batches.append(current)
            current = []
        current.append(i)
    return batches + ([current] if current else [])


def durations(manifest: Path) -> np.ndarray:
    """Each row's `seconds` field (the scale manifest writes it from the file header)."""
    with open(manifest, encoding="utf-8") as f:
        return np.array([json.loads(line)["seconds"] for line in f if line.strip()], dtype=np.float32)


def fastest(fn, repeats: int) -> tuple[float, list]:
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", default="data/scale_100h.jsonl", help="a scale manifest (scripts/scale_manifest.py)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per side, alternating; the fastest counts")
    parser.add_argument("--batch-size", type=int, default=256, help="clip cap (the scale bench's)")
    parser.add_argument("--max-batch-seconds", type=float, default=60.0)
    parser.add_argument("--output", default=str(ROOT / "benchmarks/results/batch_plan.json"))
    args = parser.parse_args()
    seconds = durations(Path(args.manifest))
    # what a Moonshine run's loader plans with: each clip's cost is its length rounded up to the length buckets
    pad = functools.partial(_bucketed_seconds, family_for("moonshine"))
    ours_s, ours = fastest(lambda: plan_epoch(seconds, args.batch_size, args.max_batch_seconds, pad), args.repeats)
    loop_s, loop = fastest(lambda: clip_by_clip(seconds, args.batch_size, args.max_batch_seconds, pad), args.repeats)
    if ours != loop:
        raise SystemExit("the two plans differ")
    result = {"command": f"uv run python benchmarks/batch_plan.py --manifest {args.manifest}", "rows": int(len(seconds)),
              "batches": len(ours), "batch_size": args.batch_size, "max_batch_seconds": args.max_batch_seconds,
              "repeats": args.repeats, "plan_epoch_seconds": ours_s, "clip_by_clip_seconds": loop_s,
              "speedup": loop_s / ours_s, "same_plan": True}
    write_json_atomic(args.output, result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
