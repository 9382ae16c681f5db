"""Is SDPA faster in bf16 or in float32 on this CPU? Forward + backward of `scaled_dot_product_attention`
(batch 4, 8 heads 52 wide: Moonshine base's), with and without a padding mask, at 100 / 300 / 900 positions,
2 threads, 10 timed repetitions after 2 untimed. The measurement behind `lora.model_utils.FLOAT32_ATTENTION`.

    uv run python benchmarks/cpu_attention_kernel.py
"""

from __future__ import annotations

import time

import torch


def run(dtype, batch=4, heads=8, length=300, width=52, reps=10, mask=True) -> float:
    """Seconds per forward + backward."""
    q, k, v = (torch.randn(batch, heads, length, width, dtype=dtype, requires_grad=True) for _ in range(3))
    m = None
    if mask:
        m = torch.ones(batch, 1, length, length, dtype=torch.bool)
        m[:, :, :, length // 2:] = False  # three of four clips half padding
        m[0] = True
    for _ in range(2):
        torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=m).sum().backward()
    start = time.perf_counter()
    for _ in range(reps):
        torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=m).sum().backward()
    return (time.perf_counter() - start) / reps


def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(2)
    for mask in (True, False):
        for length in (100, 300, 900):
            b, f = run(torch.bfloat16, length=length, mask=mask), run(torch.float32, length=length, mask=mask)
            print(f"mask={mask} L={length}: bf16 {b * 1e3:.1f} ms, fp32 {f * 1e3:.1f} ms, bf16/fp32 {b / f:.2f}")


if __name__ == "__main__":
    main()
