"""Converter: Moonshine base (English) from the `moonshine-cpp` ORT graphs to a transformers directory.

Reads the packaged `encoder_model.ort` / `decoder_model_merged.ort` (int8 weights, dequantised by
evaluating the graph's own chains, see `ort_fold`) and `tokenizer.bin`, and writes what
`AutoModelForSpeechSeq2Seq` / `AutoProcessor` load offline: config.json, model.safetensors (fp32),
generation_config.json, the fast tokenizer and preprocessor_config.json. The interface
(`PACKAGE`, `source_files`, `convert`) is the one `lora.importing.import_model` expects.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from lora.core.errors import UserError
from lora.core.outputs import quiet_progress_bars
from lora.families.moonshine.reference import (
    BOS_ID,
    DECODER_FILE,
    ENCODER_FILE,
    EOS_ID,
    TOKENIZER_FILE,
    packaged_model_dir,
)
from lora.families.moonshine.weights import graph_state_dict
from lora.weight_formats.ort_reader import read_ort_model
from lora.weight_formats.spm_vocab import (
    BOS,
    EOS,
    UNK,
    build_tokenizer,
    piece_strings,
    read_records,
)

PACKAGE = "moonshine-cpp"
PAD_ID = EOS_ID  # Moonshine has no pad token; generation needs one, eos is the usual choice

# Architecture of the packaged base-en graphs (checked against the weights by the strict load).
CONFIG = {
    "vocab_size": 32768,
    "hidden_size": 416,
    "intermediate_size": 1664,
    "encoder_num_hidden_layers": 8,
    "decoder_num_hidden_layers": 8,
    "encoder_num_attention_heads": 8,
    "decoder_num_attention_heads": 8,
    "encoder_num_key_value_heads": 8,
    "decoder_num_key_value_heads": 8,
    "encoder_hidden_act": "gelu",
    "decoder_hidden_act": "silu",
    "max_position_embeddings": 512,
    "partial_rotary_factor": 32 / 52,  # rotary on the first 32 of 52 dims per head
    "attention_bias": False,
    "bos_token_id": BOS_ID,
    "eos_token_id": EOS_ID,
    "decoder_start_token_id": BOS_ID,
    "pad_token_id": PAD_ID,
    "tie_word_embeddings": True,
    "is_encoder_decoder": True,
}
FEATURE_EXTRACTOR = {
    "feature_size": 1, "sampling_rate": 16000, "padding_value": 0.0, "do_normalize": False,
    "return_attention_mask": True,
}


def source_files() -> list[Path]:
    base = packaged_model_dir()
    return [base / ENCODER_FILE, base / DECODER_FILE, base / TOKENIZER_FILE]


def convert(out_dir: Path, progress: Callable[[str], None]) -> None:
    """Write the transformers directory for the packaged model into `out_dir` (which exists)."""
    out_dir = Path(out_dir)
    encoder, decoder, tokenizer_bin = source_files()
    progress(f"reading {encoder.name} and {decoder.name} (ORT flatbuffers), dequantising int8 weights")
    state = load_state(encoder, decoder)
    progress(f"building MoonshineForConditionalGeneration, strict load of {len(state)} tensors")
    model = build_model(state)
    progress(f"writing config.json, generation_config.json, model.safetensors to {out_dir}")
    with quiet_progress_bars():
        model.save_pretrained(out_dir)
    (out_dir / "model.safetensors").chmod(0o644)
    progress(f"rebuilding the tokenizer from {tokenizer_bin.name}; writing tokenizer and preprocessor files")
    processor = build_processor(tokenizer_bin)
    processor.save_pretrained(out_dir)
    # transformers 5 keeps the extractor inside processor_config.json; older readers and
    # AutoFeatureExtractor tools look for preprocessor_config.json, so write it as well.
    processor.feature_extractor.save_pretrained(out_dir)


def load_state(encoder: Path, decoder: Path) -> dict:
    """The float32 state dict of both graphs, keyed like `MoonshineForConditionalGeneration`."""

    state = graph_state_dict(read_ort_model(encoder), "encoder")
    state.update(graph_state_dict(read_ort_model(decoder), "decoder"))
    return state


def moonshine_config():
    from transformers import MoonshineConfig

    return MoonshineConfig(**CONFIG)


def build_model(state: dict):
    """The model with exactly `state` loaded: strict, so a missing or stray tensor is an error."""
    import torch
    from transformers import GenerationConfig, MoonshineForConditionalGeneration

    config = moonshine_config()
    model = MoonshineForConditionalGeneration(config).eval()
    tensors = {key: torch.from_numpy(value) for key, value in state.items()}
    expected = model.state_dict()
    for key, value in tensors.items():
        if key in expected and tuple(expected[key].shape) != tuple(value.shape):
            raise UserError(f"weight {key}: graph shape {tuple(value.shape)} != model {tuple(expected[key].shape)}")
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise UserError(f"converted Moonshine weights do not match the model: {exc}") from None
    if not torch.equal(model.proj_out.weight, model.model.decoder.embed_tokens.weight):
        raise UserError("output projection is not tied to the decoder embeddings")
    model.generation_config = GenerationConfig(
        bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID, decoder_start_token_id=BOS_ID
    )
    return model


def build_processor(tokenizer_bin: Path):
    """`Wav2Vec2Processor` (what transformers maps Moonshine to): raw-audio extractor + fast tokenizer."""
    from transformers import (
        PreTrainedTokenizerFast,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2Processor,
    )


    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=build_tokenizer(piece_strings(read_records(tokenizer_bin))),
        bos_token=BOS, eos_token=EOS, unk_token=UNK, pad_token=EOS,
        clean_up_tokenization_spaces=False, model_max_length=CONFIG["max_position_embeddings"],
    )
    extractor = Wav2Vec2FeatureExtractor(**FEATURE_EXTRACTOR)
    return Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer)
