"""Which precision a training run computes in: `--mixed-precision` resolved against the hardware.

One policy for every trainer entry point (runs, the digits sweep, the bench), so "auto" means the
same thing wherever it is measured.
"""

from __future__ import annotations

import os

from lora.core.errors import UserError

PRECISIONS = ("auto", "no", "fp16", "bf16")


def resolve_precision(requested: str, cpu: bool) -> tuple[str, str | None]:
    """(precision to train in, why it differs from what was asked, or None).

    "auto" (the default) trains in bf16 autocast where the device computes bf16 natively (CPUs with
    AVX512-BF16/AMX, Ampere+ GPUs) and in fp32 elsewhere: measured 1.5x faster on this 2-core CPU for
    Moonshine base with the same held-out WER (plan.md, "mixed precision"); emulated bf16 is slower.
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
        return ("bf16", None) if native_bf16(cpu) else ("no", None)
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
