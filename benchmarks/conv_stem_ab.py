"""Moonshine's first convolution (1 -> 416 channels, kernel 127, stride 64, no bias) side by side on this machine:
`nn.Conv1d` (oneDNN on a CPU, cuDNN on a GPU) against `lora.families.moonshine.conv_stem.UnfoldedConv1d` (strided
windows x weight, one GEMM), forward only (the layer is frozen and its input needs no gradient), in one process
(benchmarks/results/conv_stem_ab.json / .md):

    uv run python benchmarks/conv_stem_ab.py [--clips 16] [--seconds 4.7] [--rounds 3] [--repeats 10]

Input: the real sentence clips of ../shared/speech (dev-clean, test-clean, LJSpeech, JFK) cut or taken round to
`--seconds` each (a length-bucketed micro-batch of `--clips`); weight: Moonshine base's shape, seeded random values
(speed does not depend on them). Order conv, unfolded, unfolded, conv per round; the median per side counts.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np  # noqa: E402 - after the path: benchmarks/ is a folder of scripts
import torch  # noqa: E402

from lora.core.outputs import write_json_atomic, write_text_atomic  # noqa: E402
from lora.data.records import read_librispeech_dir  # noqa: E402
from lora.families.moonshine.conv_stem import UnfoldedConv1d  # noqa: E402

SPEECH = Path(__file__).resolve().parents[1].parent / "shared" / "speech"
CHANNELS, KERNEL, STRIDE = 416, 127, 64  # Moonshine base's encoder.conv1


def audio_batch(clips: int, seconds: float) -> torch.Tensor:
    want = int(seconds * 16000)
    rows = []
    for u in itertools.islice(itertools.cycle(read_librispeech_dir(SPEECH, ["dev-clean", "test-clean", "ljspeech", "jfk"])), clips):
        samples = u.samples()
        rows.append(np.resize(samples, want))  # cut, or the clip taken round again
    return torch.from_numpy(np.stack(rows).astype(np.float32))[:, None]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=4.7)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10, help="calls per timing")
    parser.add_argument("--output", default="benchmarks/results/conv_stem_ab.json")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    conv = torch.nn.Conv1d(1, CHANNELS, KERNEL, stride=STRIDE, bias=False)
    unfolded = UnfoldedConv1d(1, CHANNELS, KERNEL, stride=STRIDE, bias=False)
    unfolded.weight = conv.weight
    audio = audio_batch(args.clips, args.seconds)
    result = {"device": "CPU", "torch": torch.__version__, "threads": torch.get_num_threads(),
              "input": f"{args.clips} real clips x {args.seconds} s", "precisions": {}}
    for dtype in (torch.float32, torch.bfloat16):
        x, sides = audio.to(dtype), {"conv1d": conv.to(dtype), "unfolded": unfolded}
        unfolded.weight = sides["conv1d"].weight
        times: dict[str, list[float]] = {name: [] for name in sides}
        with torch.no_grad():
            diff = (sides["conv1d"](x).float() - unfolded(x).float()).abs().max().item()
            for _ in range(args.rounds):
                for name in ("conv1d", "unfolded", "unfolded", "conv1d"):
                    start = time.perf_counter()
                    for _ in range(args.repeats):
                        sides[name](x)
                    times[name].append((time.perf_counter() - start) / args.repeats * 1e3)
        median = {name: statistics.median(t) for name, t in times.items()}
        result["precisions"][str(dtype).removeprefix("torch.")] = {
            "ms_per_call": median, "speedup": median["conv1d"] / median["unfolded"], "max_abs_difference": diff,
            "timings_ms": times}
        print(dtype, {k: round(v, 2) for k, v in median.items()}, f"{median['conv1d'] / median['unfolded']:.2f}x", f"diff {diff:.2e}")
    write_json_atomic(args.output, result)
    lines = ["# Moonshine's first convolution: conv1d against windows x weight (one GEMM)", "",
             f"{result['input']}, forward only, {result['threads']} threads, torch {result['torch']}, median of "
             f"{args.rounds * 2} timings per side ({args.repeats} calls each), order conv, unfolded, unfolded, conv.", "",
             "| precision | conv1d ms | unfolded ms | speed-up | max abs difference |", "|---|---|---|---|---|"]
    for name, r in result["precisions"].items():
        lines.append(f"| {name} | {r['ms_per_call']['conv1d']:.2f} | {r['ms_per_call']['unfolded']:.2f} | "
                     f"{r['speedup']:.2f}x | {r['max_abs_difference']:.1e} |")
    write_text_atomic(Path(args.output).with_suffix(".md"), "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
