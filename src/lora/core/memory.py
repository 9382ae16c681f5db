"""Keep a long CPU run's resident memory flat under glibc's malloc.

Why by hand: a CPU training step allocates activations of a different size every micro-batch
(batches are capped by seconds of audio, not shape). glibc serves blocks over its mmap threshold
with mmap and returns them on free, but after the first such free it raises the threshold (up to
32 MB on 64-bit), so later activations come from the heap, whose freed holes are rarely returned:
resident memory creeps up over a run (measured: 2.9 GB after 2 steps, 4.2 GB by step 11 of the 100 h
run). Pinning the threshold (`mallopt(M_MMAP_THRESHOLD)`) keeps large tensors on mmap, and
`malloc_trim(0)` after each CPU micro-batch hands back what the heap still holds free. PyTorch has no
CPU caching allocator to configure for this, and jemalloc/tcmalloc would be a system install.

jemalloc, when the system has it (`libjemalloc2`, which `make setup` installs where it may), is the
default allocator of the training commands: `prefer_jemalloc` re-executes the command once with it in
`LD_PRELOAD`, before anything heavy is imported (the allocator must be in place before the first
malloc). Measured A B B A on the 1 h scale manifest, 50 steps of 60 s (benchmarks/results/jemalloc.md,
best of two per side): peak RSS 2,978 -> 2,550 MB for 25.0 -> 23.3 audio s/s. It keeps freed memory in
size classes and returns it over time, which suits the varying activation sizes that glibc fragments.
`LORA_ALLOCATOR=glibc` keeps the system allocator. The allocator in use is recorded in
`real_metrics.json` (`scale.allocator`).

`LORA_GLIBC_TUNING=trim` keeps glibc's own thresholds and only calls `malloc_trim(0)` after each CPU
micro-batch: freed heap pages anywhere in the heap go back to the system (MADV_DONTNEED) once per
micro-batch instead of every large tensor being its own mmap.

Opt-in (`LORA_GLIBC_TUNING=1`), because it costs speed: measured side by side on the 1 h scale manifest
(`benchmarks/results/heap.md`), peak RSS 3,063 -> 2,458 MB but 28.8 -> 21.6 audio s/s; with a 16 MiB
threshold 3,144 -> 2,716 MB and 28.6 -> 24.6 audio s/s (`heap_16mib.md`). Turn it on when memory, not
time, is what runs out. Both calls are no-ops where the C library is not glibc (macOS, musl).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # mallopt parameter numbers from glibc's malloc.h
M_ARENA_MAX = -8
MMAP_THRESHOLD_BYTES = 1 << 20  # blocks from 1 MiB up (any activation of a real batch) are mmapped and returned on free
ARENA_MAX = 2  # one arena per core of a 2-core machine; more only multiplies idle free lists
ENV_SWITCH = "LORA_GLIBC_TUNING"  # "1": threshold + arenas + trim; "trim": malloc_trim only; default off
TRIM_ONLY = "trim"

# oneDNN (PyTorch's CPU kernels for bf16/fp32 matmul) keeps up to 1024 compiled kernels ("primitives"),
# one per input shape, with their buffers. Duration-capped batches have a new shape almost every
# micro-batch, so resident memory climbed by tens of MB a step. Measured A B B A on the 1 h scale
# manifest, 30 steps of 60 s (benchmarks/results/onednn_cache.md): peak RSS 3,656 -> 3,081 MB at 0.99x
# the speed. Read once, when oneDNN builds its first kernel: `bound_kernel_cache` sets it before then
# unless the user already did.
ONEDNN_CACHE_ENV = "ONEDNN_PRIMITIVE_CACHE_CAPACITY"
ONEDNN_CACHE_CAPACITY = 8
# ideep (PyTorch's C++ layer over oneDNN) keeps its own LRU of matmul primitive descriptors, one per shape,
# 1024 by default, read from `LRU_CACHE_CAPACITY` when it is first used. A jemalloc heap profile of the
# 10 h scale run (`jeprof`, step 5 against step 50) put 153 of the 161 MB that stayed allocated between
# those steps in `ideep::utils::computation_cache::fetch_or_create` (every micro-batch is a new
# clips x frames shape): the ~340 MB creep of RSS between steps that made the peak depend on which batches
# were drawn. Measured A B B A, 10 h manifest, 50 steps of 60 s (benchmarks/results/ideep_cache*.md).
IDEEP_CACHE_ENV = "LRU_CACHE_CAPACITY"
IDEEP_CACHE_CAPACITY = 64

ALLOCATOR_ENV = "LORA_ALLOCATOR"  # "jemalloc" (default where found) or "glibc"
_REEXEC_MARK = "LORA_ALLOCATOR_REEXEC"  # set on the re-executed process: never loop
JEMALLOC_PATHS = ("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2", "/usr/lib/aarch64-linux-gnu/libjemalloc.so.2",
                  "/usr/lib64/libjemalloc.so.2", "/usr/lib/libjemalloc.so.2", "/usr/local/lib/libjemalloc.so.2")
# Programs that re-execute themselves with jemalloc (the training commands); anything else calling
# `prefer_jemalloc` (a test runner importing them, say) is left as it is.
ENTRY_PROGRAMS = frozenset({"lora", "lora-train", "lora-digits", "train_real_small.py"})

_libc: ctypes.CDLL | None = None
_tuned = False


def _glibc() -> ctypes.CDLL | None:
    global _libc
    if _libc is None and sys.platform.startswith("linux") and _mode() != "0":
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            libc.gnu_get_libc_version  # noqa: B018 - present only in glibc
        except (OSError, AttributeError):
            return None
        _libc = libc
    return _libc


def _mode() -> str:
    value = os.environ.get(ENV_SWITCH, "0").strip().lower()
    return value if value in ("1", TRIM_ONLY) else "0"


def keep_heap_flat() -> bool:
    """Pin glibc's mmap threshold and cap its arenas (once per process; not in "trim" mode); False where
    not glibc or off."""
    global _tuned
    libc = _glibc()
    if libc is None:
        return False
    if _mode() == TRIM_ONLY:
        return True
    if not _tuned:
        ok = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1 and libc.mallopt(M_ARENA_MAX, ARENA_MAX) == 1
        _tuned = ok
        log.debug("glibc malloc: mmap threshold %d B, %d arenas: %s", MMAP_THRESHOLD_BYTES, ARENA_MAX, "set" if ok else "refused")
    return _tuned


def release_free_memory() -> None:
    """Return the heap's free pages to the system (`malloc_trim(0)`); nothing where not glibc."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def bound_kernel_cache() -> dict[str, str]:
    """Cap oneDNN's kernel cache and ideep's primitive-descriptor cache (`ONEDNN_CACHE_CAPACITY`,
    `IDEEP_CACHE_CAPACITY`) unless the environment sets them; {variable: value in force}."""
    return {name: os.environ.setdefault(name, str(value))
            for name, value in ((ONEDNN_CACHE_ENV, ONEDNN_CACHE_CAPACITY), (IDEEP_CACHE_ENV, IDEEP_CACHE_CAPACITY))}


def jemalloc_path() -> str | None:
    """The system's jemalloc shared library, or None."""
    found = next((p for p in JEMALLOC_PATHS if os.path.isfile(p)), None)
    return found or ctypes.util.find_library("jemalloc")


def jemalloc_stat_bytes(name: str) -> int:
    """A jemalloc size statistic of this process (e.g. "stats.allocated": live bytes the program holds),
    refreshed through `epoch` first. Only where jemalloc is loaded (`allocator_in_use() == "jemalloc"`)."""
    lib = ctypes.CDLL(jemalloc_path())
    epoch = ctypes.c_uint64(1)
    lib.mallctl(b"epoch", None, None, ctypes.byref(epoch), ctypes.c_size_t(ctypes.sizeof(epoch)))
    value, size = ctypes.c_size_t(0), ctypes.c_size_t(ctypes.sizeof(ctypes.c_size_t))
    if lib.mallctl(name.encode(), ctypes.byref(value), ctypes.byref(size), None, ctypes.c_size_t(0)) != 0:
        raise RuntimeError(f"jemalloc has no statistic {name!r}")
    return value.value


def allocator_in_use() -> str:
    """"jemalloc" when it is loaded in this process, else "glibc" (or the platform's own: "system")."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            if any("libjemalloc" in line for line in maps):
                return "jemalloc"
    except OSError:
        return "system"
    return "glibc" if sys.platform.startswith("linux") else "system"


def jemalloc_env(environ) -> dict[str, str] | None:
    """`environ` plus jemalloc in `LD_PRELOAD` (and the mark that stops a second re-exec), for a process
    about to start; None where jemalloc is not installed or `LORA_ALLOCATOR=glibc`."""
    path = jemalloc_path()
    if path is None or environ.get(ALLOCATOR_ENV, "jemalloc").strip().lower() == "glibc":
        return None
    return dict(environ, **{_REEXEC_MARK: "1", "LD_PRELOAD": " ".join(filter(None, [path, environ.get("LD_PRELOAD")]))})


def prefer_jemalloc(program: str | None = None) -> None:
    """Re-execute this command with jemalloc preloaded when it is installed, not loaded yet, not turned off
    (`LORA_ALLOCATOR=glibc`) and this process is one of `ENTRY_PROGRAMS`; otherwise return at once.

    Called first thing in the training commands' `main`. Where jemalloc is missing the run goes on with
    glibc and says so (the run's log names the allocator, and `scale.allocator`), since it is an
    optimisation, not a requirement."""
    program = os.path.basename(program if program is not None else (sys.argv[0] if sys.argv else ""))
    if (program not in ENTRY_PROGRAMS or os.environ.get(_REEXEC_MARK) or not sys.platform.startswith("linux")
            or allocator_in_use() == "jemalloc"):
        return
    env = jemalloc_env(os.environ)
    if env is None:  # not installed, or LORA_ALLOCATOR=glibc: the run logs the allocator it has (lora.pipeline.start)
        return
    args = list(getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv])
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *args[1:]], env)
