"""glibc heap tuning for long CPU runs (lora.core.memory)."""

import os
import platform

import pytest

from lora.core import memory


@pytest.fixture()
def fresh(monkeypatch):
    monkeypatch.setattr(memory, "_libc", None)
    monkeypatch.setattr(memory, "_tuned", False)
    return monkeypatch


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_glibc_takes_the_settings_and_trims(fresh):
    fresh.setenv(memory.ENV_SWITCH, "1")
    assert memory.keep_heap_flat() is True
    assert memory.keep_heap_flat() is True  # once per process; a second call is free
    before = _rss_mb()
    # 192 MiB in blocks over the pinned threshold, every page written: a zero-filled bytearray comes from
    # calloc'd mmap pages that are never touched and so never counted in RSS.
    blocks = [bytearray(b"\x01" * (3 << 20)) for _ in range(64)]
    assert _rss_mb() - before > 150
    del blocks
    memory.release_free_memory()
    assert _rss_mb() - before < 30  # handed back, not kept in the heap


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_off_by_default_and_by_the_switch(fresh):
    fresh.delenv(memory.ENV_SWITCH, raising=False)
    assert memory.keep_heap_flat() is False
    fresh.setenv(memory.ENV_SWITCH, "0")
    assert memory.keep_heap_flat() is False
    memory.release_free_memory()  # a no-op, not an error


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_trim_mode_trims_without_touching_the_thresholds(fresh):
    fresh.setenv(memory.ENV_SWITCH, "trim")
    assert memory.keep_heap_flat() is True and memory._tuned is False  # no mallopt in "trim" mode
    before = _rss_mb()
    blocks = [bytearray(b"\x01" * (64 << 10)) for _ in range(3000)]  # ~190 MiB of heap-sized blocks
    assert _rss_mb() - before > 150
    del blocks[::2]  # ~95 MiB of holes between live blocks: glibc's automatic trim (top of heap only) keeps them
    held = _rss_mb()
    memory.release_free_memory()
    assert held - _rss_mb() > 60  # malloc_trim handed the holes' pages back


def test_the_kernel_cache_is_bounded_unless_the_user_chose(monkeypatch):
    monkeypatch.delenv(memory.ONEDNN_CACHE_ENV, raising=False)
    assert memory.bound_kernel_cache() == str(memory.ONEDNN_CACHE_CAPACITY) == os.environ[memory.ONEDNN_CACHE_ENV]
    monkeypatch.setenv(memory.ONEDNN_CACHE_ENV, "256")
    assert memory.bound_kernel_cache() == "256"  # the user's setting stands
