"""glibc heap tuning and the oneDNN kernel-cache cap for long CPU runs (lora.core.memory).

The RSS checks run in a fresh interpreter: in a long pytest process, earlier tests leave freed but
resident heap that new blocks reuse, so RSS would not move whatever the tuning does."""

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from lora.core import memory

GLIBC_ONLY = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")

# Allocate, free, trim; print RSS (MB) before, with the blocks, after freeing, after the trim.
PROBE = """
import json, os, sys
from lora.core import memory

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

size, count, keep_every_other = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
tuned = memory.keep_heap_flat()
before = rss()
blocks = [bytearray(b"\\x01" * size) for _ in range(count)]  # every page written (calloc'd zero pages are not resident)
held = rss()
if keep_every_other:
    del blocks[::2]  # holes between live blocks: glibc's own trim (top of the heap only) keeps them
else:
    del blocks
freed = rss()
memory.release_free_memory()
print(json.dumps({"tuned": tuned, "thresholds_set": memory._tuned, "before": before, "held": held,
                  "freed": freed, "trimmed": rss()}))
"""


def _probe(mode: str, size: int, count: int, keep_every_other: bool) -> dict:
    env = dict(os.environ, **{memory.ENV_SWITCH: mode})
    out = subprocess.run([sys.executable, "-c", PROBE, str(size), str(count), "1" if keep_every_other else "0"],
                         env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@GLIBC_ONLY
def test_glibc_takes_the_settings_and_trims():
    r = _probe("1", 3 << 20, 64, keep_every_other=False)  # 192 MiB in blocks over the pinned 1 MiB threshold
    assert r["tuned"] and r["thresholds_set"]
    assert r["held"] - r["before"] > 150
    assert r["trimmed"] - r["before"] < 30  # handed back, not kept in the heap


@GLIBC_ONLY
def test_trim_mode_trims_without_touching_the_thresholds():
    r = _probe("trim", 64 << 10, 3000, keep_every_other=True)  # ~190 MiB of heap-sized blocks
    assert r["tuned"] and not r["thresholds_set"]  # no mallopt in "trim" mode
    assert r["held"] - r["before"] > 150
    assert r["freed"] - r["trimmed"] > 60  # malloc_trim handed the holes' pages back


@pytest.fixture()
def fresh(monkeypatch):
    monkeypatch.setattr(memory, "_libc", None)
    monkeypatch.setattr(memory, "_tuned", False)
    return monkeypatch


def test_off_by_default_and_by_the_switch(fresh):
    fresh.delenv(memory.ENV_SWITCH, raising=False)
    assert memory.keep_heap_flat() is False
    fresh.setenv(memory.ENV_SWITCH, "0")
    assert memory.keep_heap_flat() is False
    memory.release_free_memory()  # a no-op, not an error


def test_the_kernel_caches_are_bounded_unless_the_user_chose(monkeypatch):
    monkeypatch.delenv(memory.ONEDNN_CACHE_ENV, raising=False)
    monkeypatch.delenv(memory.IDEEP_CACHE_ENV, raising=False)
    in_force = memory.bound_kernel_cache()
    assert in_force == {memory.ONEDNN_CACHE_ENV: str(memory.ONEDNN_CACHE_CAPACITY), memory.IDEEP_CACHE_ENV: str(memory.IDEEP_CACHE_CAPACITY)}
    assert all(os.environ[name] == value for name, value in in_force.items())
    monkeypatch.setenv(memory.ONEDNN_CACHE_ENV, "256")
    monkeypatch.setenv(memory.IDEEP_CACHE_ENV, "1024")
    assert memory.bound_kernel_cache() == {memory.ONEDNN_CACHE_ENV: "256", memory.IDEEP_CACHE_ENV: "1024"}  # the user's settings stand


def test_the_ideep_cap_set_in_process_stops_the_per_shape_creep():
    """ideep reads LRU_CACHE_CAPACITY when its cache is first used, so `bound_kernel_cache` (called by
    `pipeline.start`, in the process, not the shell) must be in time. A fresh interpreter runs bf16 matmuls
    of 300 shapes, as duration-capped micro-batches do; jemalloc's live bytes grow with the cache's entries
    unless the cap holds."""
    if memory.jemalloc_path() is None:
        pytest.skip("needs jemalloc's statistics (apt-get install libjemalloc2)")
    import torch

    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        pytest.skip("this CPU runs bf16 matmuls without oneDNN/ideep, so there is no ideep cache to bound")
    code = (
        "import sys, torch\n"
        "from lora.core.memory import bound_kernel_cache, jemalloc_stat_bytes\n"
        "if sys.argv[1] == 'bounded': bound_kernel_cache()\n"
        "def allocated():\n"
        "    return jemalloc_stat_bytes('stats.allocated')\n"
        "w = torch.randn(256, 256, dtype=torch.bfloat16)\n"
        "for n in range(1, 21): torch.randn(n, 256, dtype=torch.bfloat16) @ w\n"
        "before = allocated()\n"
        "for n in range(21, 321): torch.randn(n, 256, dtype=torch.bfloat16) @ w\n"
        "print(allocated() - before)\n")
    env = {k: v for k, v in os.environ.items() if k not in (memory.IDEEP_CACHE_ENV, memory.ONEDNN_CACHE_ENV)}
    env.update(memory.jemalloc_env(env) or {}, PYTHONPATH=str(Path(memory.__file__).resolve().parents[2]))
    grown = {side: int(subprocess.run([sys.executable, "-c", code, side], env=env, capture_output=True, text=True,
                                      check=True).stdout.split()[-1]) for side in ("bounded", "default")}
    assert grown["default"] > 4 * max(grown["bounded"], 1 << 20), grown


def _entry_script(tmp_path) -> str:
    script = tmp_path / "lora-train"  # one of memory.ENTRY_PROGRAMS: it re-executes itself with jemalloc
    script.write_text("import os, sys\nfrom lora.core.memory import allocator_in_use, prefer_jemalloc\nprefer_jemalloc()\n"
                      "print(allocator_in_use(), os.environ.get('LORA_ALLOCATOR_REEXEC'), sys.argv[1:])\n")
    return str(script)


def test_training_commands_re_execute_once_with_jemalloc_where_installed(tmp_path):
    """A training command re-executes itself with jemalloc preloaded (its arguments kept, once); with
    LORA_ALLOCATOR=glibc, or where jemalloc is missing, it runs on glibc."""
    import os
    import subprocess
    import sys

    from lora.core import memory

    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "LORA_ALLOCATOR", "LORA_ALLOCATOR_REEXEC")}
    run = subprocess.run([sys.executable, _entry_script(tmp_path), "--max-steps", "2"], env=env,
                         capture_output=True, text=True, check=True)
    expected = "jemalloc 1" if memory.jemalloc_path() else "glibc None"
    assert run.stdout.strip() == f"{expected} ['--max-steps', '2']", run.stderr
    kept = subprocess.run([sys.executable, _entry_script(tmp_path)], env=env | {"LORA_ALLOCATOR": "glibc"},
                          capture_output=True, text=True, check=True)
    assert kept.stdout.strip() == "glibc None []"


def test_other_programs_are_never_re_executed():
    """pytest (or any program importing the runners) keeps its process: only ENTRY_PROGRAMS re-execute."""
    from lora.core import memory

    assert memory.prefer_jemalloc("pytest") is None
    assert memory.prefer_jemalloc("/usr/bin/python3") is None
    assert memory.allocator_in_use() in ("glibc", "jemalloc", "system")
