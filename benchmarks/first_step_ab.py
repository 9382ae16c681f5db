"""The second 100 h run's first step, two source trees side by side: each run one fresh process of the bench's
`tasks.scale_run` (one step, 60 s micro-batches) with `PYTHONPATH=<tree>/src`, each tree on its own preflight and
prepared-rows caches (warmed by one run first: a tree's code is part of the prepared-rows key), in the order
given (A B B A ...). Prints one line per run and the medians; redirect into a log under benchmarks/results:

    git worktree add /tmp/before <commit>
    uv run python benchmarks/first_step_ab.py --a /tmp/before --b . --order ABBAABBABAAB > benchmarks/results/NAME.log
"""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path

from first_step_breakdown import child

CODE = ("import json, sys; sys.path.insert(0, 'benchmarks'); from tasks import scale_run; "
        "r = scale_run(sys.argv[1], sys.argv[2], 1, 60.0, sys.argv[3], prepared=sys.argv[4]); "
        "s = r['scale']; print(json.dumps([s['seconds_to_first_step'], s['stage_seconds']]))")
SHOWN = ("select_data", "load_model", "train_batches", "train")


def one(tree: Path, manifest: Path, work: Path) -> tuple[float, dict]:
    env = os.environ | {"PYTHONPATH": str(tree / "src")}
    first, stages = child(CODE, str(manifest), str(work / "run"), str(work / "preflight.sqlite"), str(work / "prepared"),
                          env=env, cwd=tree, timeout=1800)
    return first, stages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--a", type=Path, required=True, help="tree A (the before side)")
    parser.add_argument("--b", type=Path, required=True, help="tree B")
    parser.add_argument("--manifest", type=Path, default=Path("data/scale_100h.jsonl"))
    parser.add_argument("--order", default="ABBAABBABAAB")
    parser.add_argument("--work", type=Path, default=Path("outputs/bench/first_step_ab"), help="per-side caches and runs")
    args = parser.parse_args()
    trees = {"A": args.a.resolve(), "B": args.b.resolve()}
    manifest = args.manifest.resolve()
    for side, tree in trees.items():
        (args.work / side).mkdir(parents=True, exist_ok=True)
        print(f"# warm-up {side} ({tree}): {one(tree, manifest, (args.work / side).resolve())[0]:.1f} s", flush=True)
    seen = {side: [] for side in trees}
    for side in args.order:
        first, stages = one(trees[side], manifest, (args.work / side).resolve())
        seen[side].append(first)
        print(side, round(first, 2), {k: round(v, 2) for k, v in stages.items() if k in SHOWN}, flush=True)
    for side, values in seen.items():
        print(f"# {side}: median {statistics.median(values):.2f} s, mean {statistics.mean(values):.2f} s,",
              [round(v, 2) for v in values])


if __name__ == "__main__":
    main()
