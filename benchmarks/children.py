"""Run one measurement in a fresh child process and collect its result and its own peak RSS.

Why a child per measurement: peak RSS is a per-process high-water mark, so the memory of a training
run is only measurable in a process that did nothing else; and a fresh process gives each side of
a comparison the same start (no warm caches left by the other side). `os.wait4` returns the rusage
of exactly that child (RUSAGE_CHILDREN would fold in every earlier child).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lora.core.memory import jemalloc_env

HERE = Path(__file__).resolve().parent
POLL_S = 0.2


class ChildFailed(RuntimeError):
    pass


def alternating_order(sides: tuple[str, str], repeats: int) -> list[str]:
    """Each of two sides `repeats` times, A B B A A B ...: both sides meet the machine's slow spells alike."""
    return [sides[(i + i // 2) % 2] for i in range(2 * repeats)]


def run_child(task: str, timeout_s: float = 900, **args) -> dict:
    """`tasks.<task>(**args)` in a child; its result plus `peak_rss_mb` and `process_seconds`."""
    with tempfile.TemporaryDirectory(prefix="bench_") as tmp:
        out, err = Path(tmp) / "result.json", Path(tmp) / "stderr.txt"
        start = time.perf_counter()
        with open(err, "w") as stderr:
            # the allocator `lora train` runs with (jemalloc where installed; LORA_ALLOCATOR=glibc: the system's)
            env = jemalloc_env(os.environ) or dict(os.environ)
            child = subprocess.Popen([sys.executable, str(HERE / "worker.py"), task, json.dumps(args), str(out)],
                                     cwd=HERE.parent, stdout=subprocess.DEVNULL, stderr=stderr, env=env)
            status, usage = _wait4(child, timeout_s)
        seconds = time.perf_counter() - start
        if status != 0 or not out.is_file():
            tail = err.read_text(errors="replace").strip().splitlines()[-5:]
            raise ChildFailed(f"{task}({args}) failed (status {status}): " + " | ".join(tail))
        result = json.loads(out.read_text())
    return result | {"peak_rss_mb": usage.ru_maxrss / 1024.0, "process_seconds": seconds}


def _wait4(child: subprocess.Popen, timeout_s: float):
    """(exit status, rusage) of `child`, killing it after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            child.returncode = os.waitstatus_to_exitcode(status)  # reaped here; Popen must not wait again
            return child.returncode, usage
        if time.monotonic() > deadline:
            child.send_signal(signal.SIGKILL)
            _, status, usage = os.wait4(child.pid, 0)
            child.returncode = -signal.SIGKILL
            return child.returncode, usage
        time.sleep(POLL_S)
