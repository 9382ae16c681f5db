"""Each clip of a padded Moonshine batch encoded as if it were alone: the same transcript at any batch size.

Why: Moonshine's encoder normalises its first convolution's output with a GroupNorm of one group, whose mean and
variance run over every frame of the batch tensor, the zero padding of a short clip included; and it takes the
encoder's attention mask as every 384th sample of the input mask, which can keep a frame or two computed from
padding. So a 0.3 s clip padded to 2 s beside a longer one was encoded from other statistics than alone, and the
greedy transcript changed with the batch it fell in. Measured with the real weights on 57 clips of the digits
recipe's training speakers and dev-clean (FSDD takes and sentences; decoded at batch sizes 1, 8 and 32): 28 of 57
transcripts differed across batch sizes, WER 17.4 / 19.4 / 21.9%; on the held-out digit speakers' first 64 takes,
WER 70.3 / 53.1 / 32.8%: an eval's figure depended on its `--batch-size`. With this module: 0 of 57 differ, 17.4%
at every batch size (the batch-1 figure, which is what an exported model, one clip at a time, gives).

What it changes, without touching the weights (same parameters and state-dict keys):
  * the GroupNorm takes each clip's own frame count and computes its statistics over those frames only
    (`LengthMaskedGroupNorm`; no lengths given, as for one unpadded clip, it is the plain GroupNorm);
  * a forward pre-hook on the encoder reads the clip lengths from its input `attention_mask` (in samples), sets
    the frame counts (the convolutions' output lengths, as `_get_feat_extract_output_lengths` computes them per
    clip) and rewrites the mask so that transformers' every-384th-sample downsampling keeps exactly each clip's
    encoder frames. The frames after a clip's last one (computed from padding) are then masked everywhere, in the
    encoder's self-attention and the decoder's cross-attention alike.
The convolutions need nothing: with no padding of their own, a valid output frame reads valid input frames only.
Training uses the same model, so the clips are trained on as they are decoded.
"""

from __future__ import annotations

import torch
from torch import nn

CONV1_KERNEL, CONV1_STRIDE = 127, 64  # MoonshineEncoder: conv1 (kernel 127, stride 64), conv2 (7, 3), conv3 (3, 2)
CONV2_KERNEL, CONV2_STRIDE = 7, 3
CONV3_KERNEL, CONV3_STRIDE = 3, 2
MASK_DOWNSAMPLE = CONV1_STRIDE * CONV2_STRIDE * CONV3_STRIDE  # transformers keeps every 384th sample of the mask


def _conv_frames(length: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    return torch.div(length - kernel, stride, rounding_mode="floor") + 1


def encoder_frames(samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(frames after the first convolution, encoder frames) of clips of `samples` samples (at least 1 each)."""
    first = _conv_frames(samples, CONV1_KERNEL, CONV1_STRIDE).clamp_min(1)
    last = _conv_frames(_conv_frames(first, CONV2_KERNEL, CONV2_STRIDE), CONV3_KERNEL, CONV3_STRIDE)
    return first, last.clamp_min(1)


class LengthMaskedGroupNorm(nn.GroupNorm):
    """A one-group GroupNorm over (channels, frames) whose statistics cover each clip's first `lengths[i]` frames.
    `lengths` is set per forward by the encoder's pre-hook (None: the plain GroupNorm)."""

    lengths: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lengths = self.lengths
        if lengths is None or self.num_groups != 1 or not self.affine:
            return super().forward(x)
        xf = x.float()  # as autocast runs group_norm: in float32
        valid = (torch.arange(x.shape[-1], device=x.device)[None, :] < lengths[:, None]).to(xf.dtype)[:, None, :]
        count = valid.sum(-1, keepdim=True) * x.shape[1]
        mean = (xf * valid).sum(dim=(1, 2), keepdim=True) / count
        var = (((xf - mean) * valid) ** 2).sum(dim=(1, 2), keepdim=True) / count  # biased, as GroupNorm's
        normed = (xf - mean) * torch.rsqrt(var + self.eps)
        return normed * self.weight.float()[None, :, None] + self.bias.float()[None, :, None]


def _encoder_pre_hook(encoder, args, kwargs):
    mask = kwargs.get("attention_mask")
    if mask is None:  # one unpadded clip (or an export's trace): nothing to mask
        encoder.groupnorm.lengths = None
        return None
    first, frames = encoder_frames(mask.sum(-1))
    encoder.groupnorm.lengths = first
    keep = (frames - 1) * MASK_DOWNSAMPLE + 1  # samples whose every-384th ones are exactly the clip's frames
    kwargs["attention_mask"] = (torch.arange(mask.shape[-1], device=mask.device)[None, :] < keep[:, None]).to(mask.dtype)
    return args, kwargs


def encode_clips_alone(model) -> bool:
    """Install the above on a Moonshine model's encoder (found as the module whose conv1 feeds a GroupNorm);
    False where there is none or it is installed already."""
    encoder = next((m for m in model.modules() if isinstance(getattr(m, "groupnorm", None), nn.GroupNorm)
                    and hasattr(m, "conv1")), None)
    if encoder is None or isinstance(encoder.groupnorm, LengthMaskedGroupNorm):
        return False
    old = encoder.groupnorm
    new = LengthMaskedGroupNorm(old.num_groups, old.num_channels, old.eps, old.affine, device="meta")
    new.weight, new.bias = old.weight, old.bias  # the same parameters: state dict, LoRA and optimizer unchanged
    encoder.groupnorm = new
    encoder.register_forward_pre_hook(_encoder_pre_hook, with_kwargs=True)
    return True
