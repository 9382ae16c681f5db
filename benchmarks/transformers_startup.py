"""What `import lora`'s fix to transformers' start-up (`lora.core.transformers_startup`) saves, side by side:
fresh processes importing `transformers`, then `transformers.models` (where transformers scans its models/
sources a second time), then Moonshine's modeling module, without (A) and with (B) `import lora` first,
alternating A B / B A, `--pairs` times; the medians count (benchmarks/results/transformers_startup_ab.json):

    uv run python benchmarks/transformers_startup.py [--pairs 8]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from lora.core.outputs import write_json_atomic  # noqa: E402 - after the path: benchmarks/ is a folder of scripts

PHASES = ("transformers", "transformers_models", "to_moonshine_modeling")
PROBE = ("import time; t0 = time.perf_counter(); import transformers; t1 = time.perf_counter(); import transformers.models; "
         "t2 = time.perf_counter(); import transformers.models.moonshine.modeling_moonshine; t3 = time.perf_counter(); "
         "print(t1 - t0, t2 - t1, t3 - t0)")
SIDES = {"A_without_lora": PROBE, "B_with_lora": "import lora; " + PROBE}


def one(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300).stdout
    return dict(zip(PHASES, (float(x) for x in out.split()), strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--output", default="benchmarks/results/transformers_startup_ab.json")
    args = parser.parse_args()
    runs = {side: [] for side in SIDES}
    for i in range(args.pairs):
        for side in (list(SIDES) if i % 2 == 0 else list(SIDES)[::-1]):
            runs[side].append(one(SIDES[side]))
    medians = {side: {p: statistics.median(r[p] for r in rs) for p in PHASES} for side, rs in runs.items()}
    write_json_atomic(args.output, {"pairs": args.pairs, "order": "A B, then B A, alternating", "medians_s": medians,
                                    "runs_s": runs})
    print(json.dumps(medians, indent=1))


if __name__ == "__main__":
    main()
