"""One training comparison of `make bench` (section a), both sides run A B B A A B in their own child
processes, every run kept: how much of a ratio is the machine's noise.

    uv run python benchmarks/train_pair_ab.py --model whisper-tiny.en --targets all \
        --pairs ours_fp32:reference,ours_bf16:reference_bf16 --output benchmarks/results/whisper_all_attention_ab.json

The bench keeps each side's fastest run; this prints and keeps them all, with the ratio of the fastest.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform

import bench_config as bc
from children import alternating_order, run_child
from lora.core.outputs import write_json_atomic

KEPT = ("side", "precision", "wall_seconds", "cpu_seconds", "audio_seconds", "audio_seconds_per_second", "label_tokens")


def run_pair(case: dict, sides: tuple[str, str], repeats: int) -> dict:
    order = alternating_order(sides, repeats)
    runs = []
    for side in order:
        result = run_child("train", case=case, side=side)
        runs.append({k: result[k] for k in KEPT})
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in runs[-1].items()}), flush=True)
    best = {side: max(r["audio_seconds_per_second"] for r in runs if r["side"] == side) for side in sides}
    worst = {side: min(r["audio_seconds_per_second"] for r in runs if r["side"] == side) for side in sides}
    return {"sides": list(sides), "runs": runs, "best_ratio": best[sides[0]] / best[sides[1]],
            "spread_within_side": {s: best[s] / worst[s] - 1.0 for s in sides}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=bc.WHISPER, help="the case's model (bench_config names)")
    parser.add_argument("--targets", default="all", help="all or decoder")
    parser.add_argument("--pairs", default="ours_fp32:reference", help="comma-separated A:B side pairs (benchmarks/tasks.TRAIN_SIDES)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per side")
    parser.add_argument("--output", required=True, help="JSON file for every run")
    args = parser.parse_args(argv)
    case = dataclasses.asdict(bc.TrainCase(args.model, args.targets))
    pairs = [tuple(p.split(":")) for p in args.pairs.split(",")]
    result = {"case": case, "machine": platform.processor() or platform.machine(), "repeats": args.repeats,
              "pairs": [run_pair(case, pair, args.repeats) for pair in pairs]}
    for pair in result["pairs"]:
        print(f"{pair['sides'][0]} / {pair['sides'][1]}: fastest runs {pair['best_ratio']:.2f}x; within-side spread "
              + ", ".join(f"{s} {v:.0%}" for s, v in pair["spread_within_side"].items()))
    write_json_atomic(args.output, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
