"""Moonshine's first convolution (raw 16 kHz audio -> 416 channels, kernel 127, stride 64) as one matrix product.

Why: that layer has a single input channel and a 127-sample kernel, a shape convolution libraries serve with
generic kernels; a strided view of the audio (`Tensor.unfold`: 127-sample windows every 64 samples) times the
(416 x 127) weight is the same sum as one GEMM. On this project's CPU, that layer alone over 16 real clips of 4.7 s
(`benchmarks/conv_stem_ab.py`): 0.65x `conv1d` in fp32 (oneDNN's direct convolution wins; identical output), 1.67x
in bf16. On a GPU it is an A/B of the bench (`benchmarks/gpu.py`, side `ours_unfolded_stem`), not a default: no GPU
has measured it.
"""

from __future__ import annotations

import torch
from torch import nn


class UnfoldedConv1d(nn.Conv1d):
    """`nn.Conv1d` with one input channel, no padding, dilation or groups, computed as windows x weight.
    The same parameters (and state-dict keys) as the convolution it replaces."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (batch, 1, samples) -> (batch, channels, frames)
        windows = x[:, 0].unfold(-1, self.kernel_size[0], self.stride[0])  # (batch, frames, kernel): a view
        out = torch.matmul(self.weight[:, 0], windows.transpose(1, 2))
        return out if self.bias is None else out + self.bias[:, None]


def unfold_first_convolution(model) -> bool:
    """Swap a Moonshine encoder's `conv1` for `UnfoldedConv1d` sharing its weight; False where there is no
    such layer or its shape is not the single-channel, unpadded one."""
    owner = next((m for m in model.modules() if isinstance(getattr(m, "conv1", None), nn.Conv1d) and hasattr(m, "groupnorm")),
                 None)  # the encoder: its conv1 feeds a GroupNorm
    conv = owner.conv1 if owner is not None else None
    if conv is None or isinstance(conv, UnfoldedConv1d):
        return False
    if (conv.in_channels, conv.groups, conv.padding, conv.dilation) != (1, 1, (0,), (1,)):
        return False
    stem = UnfoldedConv1d(1, conv.out_channels, conv.kernel_size, stride=conv.stride, bias=conv.bias is not None,
                          device="meta")
    stem.weight = conv.weight
    if conv.bias is not None:
        stem.bias = conv.bias
    owner.conv1 = stem
    return True
