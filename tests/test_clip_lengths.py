"""Moonshine encodes each clip of a padded batch as if it were alone (lora.families.moonshine.clip_lengths):
the same encoder output, loss and transcript whatever the batch. Tiny random models built from the real config,
real clips; and the real weights on real speech at batch sizes 1 and 16."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lora.data.records import read_librispeech_dir
from lora.families.moonshine.clip_lengths import LengthMaskedGroupNorm, encode_clips_alone, encoder_frames
from lora.model_utils import ResolvedModel, load_base


def clips(speech_dir, n: int) -> list:
    """A short FSDD take and longer LibriSpeech sentences: clips of very different lengths in one batch."""
    fsdd = read_librispeech_dir(speech_dir, ["fsdd"])[:n // 2]
    sentences = read_librispeech_dir(speech_dir, ["dev-clean"])[:n - len(fsdd)]
    return fsdd + sentences


def tiny(path) -> tuple:
    return load_base(ResolvedModel(str(path), str(path), "local", str(path)))


def test_frame_counts_follow_the_convolutions():
    first, frames = encoder_frames(torch.tensor([16000, 4800, 127, 1]))
    assert first.tolist() == [(16000 - 127) // 64 + 1, (4800 - 127) // 64 + 1, 1, 1]
    assert frames.tolist()[0] == ((((16000 - 127) // 64 + 1) - 7) // 3 + 1 - 3) // 2 + 1 and min(frames.tolist()) >= 1


def test_a_short_clip_padded_beside_a_long_one_is_encoded_as_alone(tiny_moonshine, speech_dir):
    model, processor, family = tiny(tiny_moonshine)
    assert isinstance(model.model.encoder.groupnorm, LengthMaskedGroupNorm)
    assert not encode_clips_alone(model)  # installed once
    rows = clips(speech_dir, 2)
    inputs = [family.featurize(processor, u.samples()) for u in rows]
    assert len(inputs[0]) * 3 < len(inputs[1])  # a short take padded to a sentence's length
    encoder = model.get_encoder()
    with torch.inference_mode():
        batch = family.pad_inputs(inputs)
        together = encoder(batch["input_values"], attention_mask=batch["attention_mask"])
        for i, x in enumerate(inputs):
            one = family.pad_inputs([x])
            alone = encoder(one["input_values"], attention_mask=one["attention_mask"]).last_hidden_state[0]
            frames = int(together.attention_mask[i].sum())
            assert frames == alone.shape[0]  # exactly the clip's own frames are kept
            torch.testing.assert_close(together.last_hidden_state[i, :frames], alone, atol=1e-5, rtol=1e-4)
            plain = encoder(torch.from_numpy(x)[None]).last_hidden_state[0]  # no mask at all: the plain GroupNorm
            torch.testing.assert_close(plain, alone, atol=1e-5, rtol=1e-4)


def test_the_weights_and_their_names_are_unchanged(tiny_moonshine):
    from transformers import AutoModelForSpeechSeq2Seq

    model, _, _ = tiny(tiny_moonshine)
    plain = AutoModelForSpeechSeq2Seq.from_pretrained(tiny_moonshine)
    ours, theirs = model.state_dict(), plain.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)


@pytest.mark.slow
def test_real_moonshine_transcribes_alike_at_any_batch_size(speech_dir):
    from lora.data_loader import prepare_dataset
    from lora.decoding import eval_loss, transcribe_examples
    from lora.model_utils import resolve_model_id

    model, processor, family = load_base(resolve_model_id("moonshine-base-en"))
    examples = prepare_dataset(clips(speech_dir, 16), processor, family, None)
    one = transcribe_examples(model, processor, family, examples, 1, progress=False)
    sixteen = transcribe_examples(model, processor, family, examples, 16, progress=False)
    assert one == sixteen
    assert np.isclose(eval_loss(model, family, examples, 1), eval_loss(model, family, examples, 16), rtol=1e-4)
