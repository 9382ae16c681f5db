"""Time to the first optimizer step on a corpus no run has seen: styling every clip before the first step
(`--style-on-draw no`, the old way) against styling each clip as training first draws it (`auto`).

Each side is the bench's scale run (`tasks.scale_run`: Moonshine base, 60 s micro-batches) in a fresh child
process with every cache cold: a new preflight cache, and a new `$LORA_HOME` (so no base transcripts and no
prepared rows) that links only the imported models and the CPU precision probe of the real one. One run per
side, `no` first. Throughput beside it: styling as drawn transcribes inside the steps, so their audio seconds
per second carry its cost.

    uv run python benchmarks/first_step_cold.py --manifest data/scale_100h.jsonl --steps 10
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from children import run_child  # noqa: E402 - benchmarks/ is a folder of scripts, not a package
from lora.core.outputs import write_json_atomic, write_text_atomic  # noqa: E402
from lora.core.paths import lora_home  # noqa: E402

SIDES = ("no", "auto")
KEPT = ("models", "cpu_bf16_probe.json")  # what the cold $LORA_HOME links from the real one


def cold_home(root: Path) -> Path:
    home = root / "lora_home"
    home.mkdir(parents=True)
    for name in KEPT:
        if (lora_home() / name).exists():
            (home / name).symlink_to(lora_home() / name)
    return home


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", default="data/scale_100h.jsonl")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--output", default="benchmarks/results/first_step_cold_cache.json")
    args = parser.parse_args()
    outer = dict(os.environ)
    rows = []
    for side in SIDES:
        with tempfile.TemporaryDirectory(prefix="cold_") as tmp:
            os.environ["LORA_HOME"] = str(cold_home(Path(tmp)))
            try:
                result = run_child("scale_run", timeout_s=3600, manifest=args.manifest, output_dir=f"outputs/bench/cold_{side}",
                                   steps=args.steps, max_batch_seconds=60.0, cache=str(Path(tmp) / "preflight.sqlite"),
                                   options={"style_on_draw": side})
            finally:
                os.environ.clear()
                os.environ.update(outer)
        scale, style = result["scale"], result["target_style"]
        rows.append({"style_on_draw": side, "seconds_to_first_step": scale["seconds_to_first_step"],
                     "stage_seconds": scale["stage_seconds"], "target_style": style,
                     "train_audio_seconds_per_second": result["train_audio_seconds_per_second"],
                     "train_wall_seconds": result["train_wall_seconds"], "peak_rss_mb": result["peak_rss_mb"],
                     "process_seconds": result["process_seconds"], "corpus_rows": scale["corpus_rows"],
                     "corpus_hours": scale["corpus_hours"]})
        print({k: v for k, v in rows[-1].items() if k not in ("stage_seconds", "target_style")}, flush=True)
    summary = {"manifest": args.manifest, "steps": args.steps, "max_batch_seconds": 60.0, "model": "moonshine-base-en (real weights)",
               "how": "one fresh child per side, every cache cold (preflight, prepared rows, base transcripts); `no` first",
               "command": f"uv run python benchmarks/first_step_cold.py --manifest {args.manifest} --steps {args.steps}",
               "rows": rows}
    write_json_atomic(Path(args.output), summary)
    write_text_atomic(Path(args.output).with_suffix(".md"), markdown(summary))


def markdown(summary: dict) -> str:
    lines = [f"# First step on a cold corpus: styling up front vs as drawn ({summary['manifest']}, {summary['steps']} steps)", "",
             f"{summary['how']}. `{summary['command']}`", "",
             "| --style-on-draw | first step (s, from process start) | styling before it (s) | clips transcribed before | "
             "clips transcribed in training | time on it in training (s) | audio s/s | peak RSS (MB) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in summary["rows"]:
        t = r["target_style"] or {}
        lines.append(f"| {r['style_on_draw']} | {r['seconds_to_first_step']:.1f} | {r['stage_seconds'].get('style_targets', 0):.1f} | "
                     f"{t.get('transcribed', 0)} | {t.get('transcribed_on_draw', 0)} | {t.get('seconds_on_draw', 0):.1f} | "
                     f"{r['train_audio_seconds_per_second']:.1f} | {r['peak_rss_mb']:.0f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
