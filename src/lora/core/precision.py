"""Which precision a training run computes in: `--mixed-precision` resolved against the hardware.

One policy for every trainer entry point (runs, the digits sweep, the bench), so "auto" means the
same thing wherever it is measured.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from pathlib import Path

from lora.core.errors import UserError
from lora.core.outputs import write_json_atomic
from lora.core.paths import lora_home

PRECISIONS = ("auto", "no", "fp16", "bf16")
# The CPU probe behind "auto": one Linear forward + backward at a Moonshine-base MLP shape (tokens x hidden x
# 4 x hidden; linear layers are most of a CPU training step), fp32 against bf16 autocast, best of a few.
PROBE_SHAPE = (1024, 416, 1664)
PROBE_REPEATS = 3
# bf16 autocast also rounds activations, so it must pay: at least this much faster than fp32 to be chosen.
BF16_MIN_SPEEDUP = 1.1
PROBE_CACHE = "cpu_bf16_probe.json"  # under $LORA_HOME: one answer per CPU model, flags, torch and thread count


def resolve_precision(requested: str, cpu: bool) -> tuple[str, str | None]:
    """(precision to train in, why it differs from what was asked, or None).

    "auto" (the default) trains in bf16 autocast where the device computes bf16 natively and it pays: on
    Ampere+ GPUs, and on CPUs with AVX512-BF16/AMX where a probe (`cpu_bf16_speedup`, a fraction of a second,
    cached per machine) finds bf16 autocast at least BF16_MIN_SPEEDUP x faster than fp32; fp32 elsewhere. Why
    the probe: on the 2-core machines of earlier sessions bf16 trained Moonshine base 1.3-1.5x faster than
    fp32, but on an AVX512-BF16 Xeon without AMX it trained at 0.70x (plan.md, "mixed precision"), and both
    pass oneDNN's bf16 check; emulated bf16 is slower still.
    accelerate accepts fp16 on a CPU and then trains in fp32 without a word, and stops with a traceback
    on bf16 where the device lacks it: both fall back to fp32 here, logged and kept in the metrics.
    `accelerate launch --mixed_precision X` counts when our own flag is left at "auto".
    """
    from accelerate.utils import is_bf16_available

    if requested == "auto":
        requested = os.environ.get("ACCELERATE_MIXED_PRECISION", "auto").lower()
    if requested not in PRECISIONS:
        raise UserError(f"--mixed-precision {requested!r}: choose one of {', '.join(PRECISIONS)}")
    if requested == "auto":
        if not native_bf16(cpu):
            return "no", None
        if not cpu:  # an accelerator that computes bf16 natively: the probe below times the CPU
            return "bf16", None
        speedup = cpu_bf16_speedup()
        if speedup is None:  # several processes and no cached probe: they must agree, so none probes alone
            return "bf16", None
        if speedup >= BF16_MIN_SPEEDUP:
            return "bf16", None
        cache = lora_home() / PROBE_CACHE
        kept = f"probe cached in {cache}" if cache.is_file() else f"probe not cached: {cache.parent} is not writable"
        return "no", (f"bf16 autocast ran at {speedup:.2f}x the fp32 speed on this CPU ({kept}); "
                      "training in fp32 (--mixed-precision bf16 forces it)")
    if requested == "fp16" and cpu:
        return "no", "fp16 needs a GPU; training in fp32 on the CPU (bf16 works on CPUs)"
    if requested == "bf16" and not cpu and not is_bf16_available():  # CPU autocast always has bf16
        return "no", "bf16 is not supported by this GPU; training in fp32"
    return requested, None


def native_bf16(cpu: bool) -> bool:
    """Whether the training device computes bf16 in hardware (not emulated)."""
    import torch

    if not cpu and torch.cuda.is_available():
        return torch.cuda.is_bf16_supported(including_emulation=False)
    try:  # oneDNN's own check: AVX512-BF16 or AMX; a private op, so any failure means "no"
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def cpu_bf16_speedup() -> float | None:
    """fp32 time over bf16-autocast time of the probe (`PROBE_SHAPE`) on this CPU; > 1: bf16 is faster.

    Measured once per CPU model, flag set, torch version and thread count, then read from
    `$LORA_HOME/cpu_bf16_probe.json`, so every run on a machine trains in the same precision. None under
    several processes (torchrun) with nothing cached: probes running side by side on shared cores would time
    each other, and the ranks must not choose differently.
    """
    import torch  # deferred: heavy

    key = machine_key(torch.__version__, torch.get_num_threads())
    path = lora_home() / PROBE_CACHE
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cached = {}
    if isinstance(cached.get(key), int | float):
        return float(cached[key])
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return None
    speedup = _probe(torch)
    try:
        write_json_atomic(path, {**cached, key: speedup})
    except OSError:  # a read-only home: the answer holds for this run only
        pass
    return speedup


def _probe(torch) -> float:
    tokens, hidden, wide = PROBE_SHAPE
    generator = torch.Generator().manual_seed(0)
    layer = torch.nn.Linear(hidden, wide)
    x = torch.randn(tokens, hidden, generator=generator, requires_grad=True)

    def step(bf16: bool) -> float:
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            y = layer(x)
        y.float().sum().backward()
        return time.perf_counter() - start

    for bf16 in (False, True):  # warm-up: oneDNN builds its kernels on first use
        step(bf16)
    fp32 = min(step(False) for _ in range(PROBE_REPEATS))
    bf16 = min(step(True) for _ in range(PROBE_REPEATS))
    return fp32 / max(bf16, 1e-9)


def machine_key(torch_version: str, threads: int) -> str:
    """CPU model + a digest of its flags + torch version + threads: what decides the probe's answer."""
    fields = _cpuinfo()
    digest = hashlib.sha256(" ".join(sorted(fields.get("flags", "").split())).encode()).hexdigest()[:12]
    return f"{cpu_model()} | flags {digest} | torch {torch_version} | {threads} threads"


def cpu_model() -> str:
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def _cpuinfo() -> dict[str, str]:
    """The first processor's lines of /proc/cpuinfo (empty where there is none)."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            name, _, value = line.partition(":")
            fields.setdefault(name.strip(), value.strip())
    except OSError:
        pass
    return fields
