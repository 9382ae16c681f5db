"""The converted Moonshine base checkpoint against the packaged original, on real LibriSpeech speech.

The original is the `moonshine-cpp` `.ort` graphs run by onnxruntime (`OrtMoonshine`); the
converted model is the transformers directory `lora-import moonshine-base-en` writes. Both decode
greedily under the same length cap, so any difference comes from the conversion.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pytest

TOKEN_IDENTICAL_MIN = 0.90  # fraction of utterances with identical greedy token ids
WER_GAP_MAX = 0.5  # percentage points


@dataclass
class Pair:
    utt_id: str
    reference: str
    ort_ids: list[int]
    ort_text: str
    hf_ids: list[int]
    hf_text: str


def _plain(text: str) -> str:
    """Lower case, punctuation removed (apostrophes dropped, other marks become spaces)."""
    text = re.sub(r"[^\w\s']+", " ", text.lower()).replace("'", "")
    return " ".join(text.split())


def _wer_percent(refs: list[str], hyps: list[str]) -> float:
    import jiwer

    return 100.0 * jiwer.wer([_plain(r) for r in refs], [_plain(h) for h in hyps])


def _generated(ids: list[int], eos: int) -> list[int]:
    """Tokens after the decoder start token, cut before the first end-of-sequence."""
    ids = ids[1:]
    return ids[: ids.index(eos)] if eos in ids else ids


@pytest.fixture(scope="module")
def converted(moonshine_dir):
    from transformers import AutoModelForSpeechSeq2Seq, AutoProcessor

    model = AutoModelForSpeechSeq2Seq.from_pretrained(moonshine_dir).eval()
    return model, AutoProcessor.from_pretrained(moonshine_dir)


@pytest.fixture(scope="module")
def reference():
    from lora.families.moonshine.reference import OrtMoonshine

    return OrtMoonshine()


@pytest.fixture(scope="module")
def pairs(converted, reference, librispeech_utterances) -> list[Pair]:
    import torch

    from lora.families.moonshine.reference import max_new_tokens

    model, processor = converted
    eos = model.generation_config.eos_token_id
    rows = []
    for utt in librispeech_utterances:
        audio = utt.samples()
        cap = max_new_tokens(len(audio))
        ort_ids, ort_text = reference.transcribe(audio, cap)
        inputs = processor(audio, sampling_rate=16000, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=cap, do_sample=False, num_beams=1)
        hf_ids = _generated(out[0].tolist(), eos)
        hf_text = processor.tokenizer.decode(hf_ids, skip_special_tokens=True)
        rows.append(Pair(utt.id, utt.text, ort_ids, ort_text, hf_ids, hf_text))
    return rows


def test_saved_weights_are_the_dequantised_graph_values(moonshine_dir):
    """Strict load (no missing/unexpected keys) and every saved tensor equals the graph's own value."""
    from safetensors.numpy import load_file
    from transformers import AutoModelForSpeechSeq2Seq

    from lora.families.moonshine import importer as moonshine

    model, info = AutoModelForSpeechSeq2Seq.from_pretrained(moonshine_dir, output_loading_info=True)
    assert not any(info.get(key) for key in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"))
    state = moonshine.load_state(*moonshine.source_files()[:2])
    moonshine.build_model(state)  # strict load_state_dict of all 211 tensors
    assert len(state) == len(model.state_dict()) == 211
    saved = load_file(str(moonshine_dir / "model.safetensors"))
    for key, value in saved.items():
        assert value.dtype == np.float32, key
        assert np.array_equal(value, state[key]), key


def test_encoder_matches_onnxruntime(converted, reference, librispeech_utterances):
    import torch

    model, processor = converted
    audio = librispeech_utterances[0].samples()[: 16000 * 4]
    inputs = processor(audio, sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        ours = model.model.encoder(inputs["input_values"]).last_hidden_state[0].numpy()
    theirs = reference.encode(audio)[0]
    assert ours.shape == theirs.shape
    assert np.abs(ours - theirs).max() < 1e-3


def test_greedy_transcripts_match_onnxruntime(pairs):
    identical = sum(p.ort_ids == p.hf_ids for p in pairs) / len(pairs)
    refs = [p.reference for p in pairs]
    wer_ort = _wer_percent(refs, [p.ort_text for p in pairs])
    wer_hf = _wer_percent(refs, [p.hf_text for p in pairs])
    print(f"\n{len(pairs)} utterances: token-identical {identical:.0%}, WER converted {wer_hf:.2f}% "
          f"vs onnxruntime {wer_ort:.2f}%")
    assert len(pairs) >= 10
    assert identical >= TOKEN_IDENTICAL_MIN, [p.utt_id for p in pairs if p.ort_ids != p.hf_ids]
    assert abs(wer_hf - wer_ort) <= WER_GAP_MAX
    assert wer_ort < 15.0  # real speech, a real model: sanity, not a benchmark


def test_tokenizer_matches_the_package_tokenizer(pairs, converted):
    """Encode/decode of every transcript with the rebuilt fast tokenizer vs. the package's tokenizer.

    What "the package tokenizer" honestly is: `moonshine-cpp` ships only `tokenizer.bin`, used by
    its C++ BinTokenizer to *decode* (join each id's byte record, "▁" -> space, drop the leading
    space); its native library cannot run here. So:
    - decode is checked against those BinTokenizer rules (`package_decode`) on the onnxruntime
      transcripts' ids, and the text must be what the reference produced;
    - encode has no runnable package implementation, so it is checked against SentencePiece
      itself (the `sentencepiece` library over the same pieces, `sentencepiece_proto`), and against
      the ids the original model emitted for each transcript (the segmentation it was trained on).
    """
    from sentencepiece import SentencePieceProcessor

    from lora.core.text import target_text
    from lora.families.moonshine.reference import packaged_model_dir
    from lora.weight_formats.spm_vocab import package_decode, piece_strings, read_records, sentencepiece_proto

    tokenizer = converted[1].tokenizer
    records = read_records(packaged_model_dir() / "tokenizer.bin")
    spm = SentencePieceProcessor(model_proto=sentencepiece_proto(piece_strings(records)))
    for p in pairs:
        assert tokenizer.decode(p.ort_ids, skip_special_tokens=True) == package_decode(records, p.ort_ids)
        assert package_decode(records, p.ort_ids) == p.ort_text
        assert tokenizer(p.ort_text, add_special_tokens=False).input_ids == p.ort_ids, p.utt_id
    texts = [p.ort_text for p in pairs] + [target_text(p.reference, "sentence") for p in pairs]
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False).input_ids
        assert ids == spm.encode(text), text
        assert tokenizer.decode(ids) == package_decode(records, ids) == text


def test_import_is_idempotent(moonshine_dir):
    from lora.importing import import_model

    before = {p.name: p.stat().st_mtime_ns for p in moonshine_dir.iterdir()}
    messages: list[str] = []
    import_model("moonshine-base-en", moonshine_dir, progress=messages.append)
    assert any("nothing to do" in m for m in messages), messages
    assert {p.name: p.stat().st_mtime_ns for p in moonshine_dir.iterdir()} == before
