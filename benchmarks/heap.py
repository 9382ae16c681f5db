"""Peak RSS and speed of one scale run, two settings side by side: by default with and without
`lora.core.memory`'s glibc tuning; `--tuned-env`/`--untuned-env` (environment) and `--tuned-options`/
`--untuned-options` (TrainConfig fields, e.g. length_buckets=false) compare anything else.

Each side is the bench's scale run (`tasks.scale_run`: Moonshine base, 60 s micro-batches, no gradient
accumulation) in a fresh child process on the same manifest; `LORA_GLIBC_TUNING=0` turns the tuning off
in the untuned child. In the result rows `glibc_tuning: true` marks the tuned side. Order A B B A (each side's fastest run and lowest peak count; all runs listed). Throughput is printed beside it: the tuning must not cost speed.

    uv run python benchmarks/heap.py --manifest data/scale_10h.jsonl --steps 30
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from children import run_child  # noqa: E402 - benchmarks/ is a folder of scripts, not a package
from lora.core.memory import ENV_SWITCH  # noqa: E402
from lora.core.outputs import write_json_atomic, write_text_atomic  # noqa: E402


def _pairs(text: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in text.split(",") if item.strip())


def _value(text: str):
    """A `TrainConfig` option's value from the command line: true/false, a number, else the text."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _label(mode: str, env: dict[str, str], options: dict | None = None) -> str:
    return ", ".join([f"{ENV_SWITCH}={mode}"] + [f"{k}={v}" for k, v in env.items()]
                     + [f"--{k.replace('_', '-')} {v}" for k, v in (options or {}).items()])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", default="data/scale_10h.jsonl")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--output", default="benchmarks/results/heap.json")
    parser.add_argument("--tuned-mode", default="1", help=f"the {ENV_SWITCH} value of the tuned side: 1 (threshold + arenas + "
                        "trim) or trim (malloc_trim after each micro-batch only)")
    parser.add_argument("--tuned-env", default="", help="more KEY=VALUE settings of the tuned side, comma-separated")
    parser.add_argument("--untuned-env", default="", help="more KEY=VALUE settings of the untuned side, comma-separated")
    parser.add_argument("--tuned-options", default="", help="TrainConfig options of the tuned side, KEY=VALUE comma-separated "
                        "(e.g. length_buckets=true)")
    parser.add_argument("--untuned-options", default="", help="TrainConfig options of the untuned side (e.g. length_buckets=false)")
    parser.add_argument("--markdown-only", action="store_true", help="rewrite the .md beside --output from its JSON, run nothing")
    args = parser.parse_args()
    if args.markdown_only:
        return write_markdown(json.loads(Path(args.output).read_text()), args.output)
    extra = {True: _pairs(args.tuned_env), False: _pairs(args.untuned_env)}
    options = {side: {k: _value(v) for k, v in _pairs(text).items()}
               for side, text in ((True, args.tuned_options), (False, args.untuned_options))}
    cache = str(Path(tempfile.mkdtemp(prefix="heap_")) / "preflight.sqlite")
    rows = []
    outer = dict(os.environ)
    for tuned in (True, False, False, True):
        os.environ.clear()  # each side sees only its own settings (none left over from the other side)
        os.environ.update({**outer, ENV_SWITCH: args.tuned_mode if tuned else "0", **extra[tuned]})
        result = run_child("scale_run", timeout_s=3600, manifest=args.manifest, output_dir=f"outputs/bench/heap_{int(tuned)}",
                           steps=args.steps, max_batch_seconds=60.0, cache=cache, options=options[tuned])
        rows.append({"glibc_tuning": tuned, "peak_rss_mb": result["peak_rss_mb"],
                     "peak_rss_workers_mb": result["peak_rss_workers_mb"],
                     "train_audio_seconds_per_second": result["train_audio_seconds_per_second"],
                     "train_wall_seconds": result["train_wall_seconds"]})
        print(rows[-1], flush=True)
    os.environ.clear()
    os.environ.update(outer)

    def best(tuned: bool) -> dict:
        side = [r for r in rows if r["glibc_tuning"] == tuned]
        return {"glibc_tuning": tuned, "peak_rss_mb": min(r["peak_rss_mb"] for r in side),
                "train_audio_seconds_per_second": max(r["train_audio_seconds_per_second"] for r in side)}

    on, off = best(True), best(False)
    flags = "".join(f" --{k} '{v}'" for k, v in (("tuned-env", args.tuned_env), ("untuned-env", args.untuned_env),
                                                  ("tuned-options", args.tuned_options),
                                                  ("untuned-options", args.untuned_options)) if v)
    summary = {"command": f"uv run python benchmarks/heap.py --manifest {args.manifest} --steps {args.steps} "
                          f"--tuned-mode {args.tuned_mode}{flags}",
               "tuned_mode": args.tuned_mode, "tuned_env": extra[True], "untuned_env": extra[False],
               "tuned_options": options[True], "untuned_options": options[False],
               "manifest": args.manifest, "steps": args.steps, "max_batch_seconds": 60.0, "runs": rows, "best": [on, off],
               "rss_ratio_tuned_over_untuned": on["peak_rss_mb"] / off["peak_rss_mb"],
               "throughput_ratio_tuned_over_untuned": on["train_audio_seconds_per_second"] / off["train_audio_seconds_per_second"]}
    write_json_atomic(args.output, summary)
    write_markdown(summary, args.output)


def write_markdown(summary: dict, output: str) -> None:
    lines = [f"Heap tuning A/B: `{summary['command']}` (Moonshine base, 60 s micro-batches, fresh child per side)", "",
             "| side (environment) | peak RSS MB | largest worker MB | audio s/s | train s |", "|---|---|---|---|---|"]
    label = {True: _label(summary.get("tuned_mode", "1"), summary.get("tuned_env", {}), summary.get("tuned_options")),
             False: _label("0", summary.get("untuned_env", {}), summary.get("untuned_options"))}
    lines += [f"| {label[r['glibc_tuning']]} | {r['peak_rss_mb']:.0f} | {r['peak_rss_workers_mb']:.0f} | "
              f"{r['train_audio_seconds_per_second']:.1f} | {r['train_wall_seconds']:.0f} |" for r in summary["runs"]]
    lines += ["", f"RSS tuned/untuned {summary['rss_ratio_tuned_over_untuned']:.2f}; throughput tuned/untuned "
              f"{summary['throughput_ratio_tuned_over_untuned']:.2f}"]
    write_text_atomic(Path(output).with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
