"""LoRA's input dropout with a faster random source on a CPU.

PEFT puts an `nn.Dropout` on the input of every LoRA branch. On a CPU torch draws that mask with
`bernoulli_`, element by element from its Mersenne Twister: 15% of a bare Moonshine training step and 14% of
a Whisper one (`benchmarks/results/profile_cpu_smoke.json`), next after the matrix products and attention.
`FastMaskDropout` draws the same Bernoulli mask from numpy's SFC64 generator, 16 random bits per element
(numpy's raw generator output, no per-element sampling), seeded from torch's generator so that a run stays
reproducible and resumes from torch's RNG state like any other. Measured where it is used, in
`benchmarks/results/lora_dropout_ab.json`. On any other device, in eval mode and under `torch.compile`, it is `nn.Dropout`.

Hand-written because no library offers a fast CPU dropout mask; the distribution is the same as torch's up to
the 16-bit keep threshold: kept with probability round((1 - p) * 2**16) / 2**16 (within 2**-17 of 1 - p), kept
values scaled by the inverse of that probability, so the output's expectation is the input, as with nn.Dropout.
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from torch import nn

KEEP_BITS = 16
_LEVELS = 1 << KEEP_BITS
_SEED_BOUND = (1 << 63) - 1


def keep_threshold(p: float) -> int:
    """How many of the 2**16 equally likely 16-bit values keep an element (dropout probability `p`)."""
    return round((1.0 - p) * _LEVELS)


def keep_mask(shape: tuple[int, ...], p: float) -> tuple[torch.Tensor, float]:
    """A boolean mask of `shape`, each element True with probability `keep_threshold(p) / 2**16`, and that
    probability. One draw from torch's default CPU generator seeds numpy's SFC64, which supplies the bits."""
    count = int(np.prod(shape))
    seed = int(torch.randint(0, _SEED_BOUND, (), dtype=torch.int64))
    words = np.random.Generator(np.random.SFC64(seed)).bit_generator.random_raw(-(-count // 4))  # 4 x 16 bits each
    values = torch.from_numpy(words.view(np.int16)[:count]).view(shape)  # uniform over -2**15 .. 2**15 - 1
    threshold = keep_threshold(p)
    return values < threshold - (_LEVELS >> 1), threshold / _LEVELS


class FastMaskDropout(nn.Dropout):
    """`nn.Dropout` whose CPU training mask comes from `keep_mask` (see the module's docstring)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (not self.training or self.p == 0.0 or x.device.type != "cpu" or sys.byteorder != "little"
                or torch.compiler.is_compiling()):  # under --compile torch's own: numpy's generator would break the graph
            return super().forward(x)
        if keep_threshold(self.p) >= _LEVELS:  # p below 2**-17: nothing would be dropped
            return x
        keep, kept = keep_mask(tuple(x.shape), self.p)
        return torch.where(keep, x, 0.0) * (1.0 / kept)


def lora_branches(model: nn.Module) -> list[tuple[nn.ModuleDict, str]]:
    """Every LoRA branch's dropout slot in `model`: (PEFT's `lora_dropout` dict, adapter name)."""
    return [(module.lora_dropout, name) for module in model.modules()
            if isinstance(getattr(module, "lora_dropout", None), nn.ModuleDict) for name in module.lora_dropout]


def use_fast_mask_dropout(model: nn.Module) -> int:
    """Swap every LoRA branch's `nn.Dropout` in `model` (PEFT's `lora_dropout` dicts) for `FastMaskDropout`
    of the same probability; returns how many were swapped. Nothing is saved with them: an adapter trained
    this way loads and runs as any other."""
    swapped = 0
    for branches, name in lora_branches(model):
        if type(branches[name]) is nn.Dropout:
            branches[name] = FastMaskDropout(branches[name].p)
            swapped += 1
    return swapped
