"""Where a scale run's resident memory goes, step by step: jemalloc's own statistics after every optimizer
step, and optionally jemalloc heap profiles to compare with `jeprof`.

Runs the bench's scale run (`tasks.scale_run`: Moonshine base, 60 s micro-batches) in this process, so it
must itself run under jemalloc. After each step it records RSS and jemalloc's `stats.allocated` (live bytes
the program holds), `stats.resident` and `stats.retained`. Live bytes that climb step after step are held by
something (a cache, a leak); resident minus allocated is the allocator's own slack.

    LORA_ALLOCATOR_REEXEC=1 LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 \\
      uv run python benchmarks/rss_trace.py --manifest data/scale_10h.jsonl --output /tmp/trace.json

With `--dump-steps 5,50` and `MALLOC_CONF=prof:true,lg_prof_sample:18` in the environment (Debian's
libjemalloc2 is built with profiling), heap profiles are written after those steps; `jeprof` (in the
libjemalloc-dev package) then shows what grew between them:

    jeprof --text --cum --base=<dir>/step5.heap $(readlink -f .venv/bin/python) <dir>/step50.heap
"""

from __future__ import annotations

import argparse
import ctypes
import resource
import sys
import tempfile
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1] / "src")]

from lora.core.memory import allocator_in_use, jemalloc_path, jemalloc_stat_bytes  # noqa: E402 - benchmarks/ is a folder of scripts
from lora.core.outputs import write_json_atomic  # noqa: E402

STATS = ("allocated", "active", "resident", "mapped", "retained")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", default="data/scale_10h.jsonl")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--dump-steps", default="", help="comma-separated steps after which to write a heap profile")
    parser.add_argument("--dump-dir", default="/tmp/jeprof")
    parser.add_argument("--output", required=True, help="the trace (JSON)")
    args = parser.parse_args()
    if allocator_in_use() != "jemalloc":
        sys.exit("rss_trace.py: run it under jemalloc (LD_PRELOAD=<libjemalloc.so.2>, see the docstring)")
    lib = ctypes.CDLL(jemalloc_path())
    dumps = {int(s) for s in args.dump_steps.split(",") if s.strip()}
    Path(args.dump_dir).mkdir(parents=True, exist_ok=True)

    import lora.training as training  # the loop calls `current_rss_mb` once per logged step
    from tasks import scale_run

    trace: list[dict] = []
    rss_of, next_good = training.current_rss_mb, training._next_good
    shapes: list[dict] = []  # the micro-batches of the step being traced (one per step without accumulation)

    def recorded(*a, **kw):
        loaded = next_good(*a, **kw)
        shapes.append({k: list(v.shape) for k, v in loaded.tensors.items()})
        return loaded

    def traced() -> float:
        rss = rss_of()
        step = len(trace) + 1
        if step in dumps:
            path = ctypes.c_char_p(str(Path(args.dump_dir) / f"step{step}.heap").encode())
            lib.mallctl(b"prof.dump", None, None, ctypes.byref(path), ctypes.c_size_t(ctypes.sizeof(path)))
        # ru_maxrss is KiB on Linux; the loop logs a step one step late, so the batch listed is the one
        # of the step logged (shapes[step - 1]) and the peak is as of the step after it began
        trace.append({"step": step, "rss_mb": rss, "peak_so_far_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      **{f"{k}_mb": jemalloc_stat_bytes("stats." + k) / 2**20 for k in STATS},
                      "batch": shapes[step - 1] if step <= len(shapes) else None})
        return rss

    training.current_rss_mb = traced
    training._next_good = recorded
    with tempfile.TemporaryDirectory(prefix="rss_trace_") as tmp:
        result = scale_run(args.manifest, str(Path(tmp) / "run"), args.steps, 60.0, str(Path(tmp) / "preflight.json"),
                           options={"seed": args.seed})
    result.update(command=" ".join(sys.argv), trace=trace)
    write_json_atomic(args.output, result)
    for row in trace[:: max(1, len(trace) // 5)] + trace[-1:]:
        print({k: (round(v) if isinstance(v, float) else v) for k, v in row.items()})
    print(f"peak RSS {result['peak_rss_mb_in_run']:.0f} MB")


if __name__ == "__main__":
    main()
