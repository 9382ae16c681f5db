"""Greedy transcription with onnxruntime on the graphs `moonshine_onnx` exports.

The loop mirrors `lora.families.moonshine.reference.OrtMoonshine` (one clip at a time, one token per
decoder call, keys/values carried between calls, the same 13-tokens-per-second cap), so timing the
two compares the graphs, not the decoding loops.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lora.core.audio import SAMPLE_RATE
from lora.core.errors import UserError
from lora.families.moonshine.export_onnx import (
    DECODER_FILE,
    ENCODER_FILE,
    cross_names,
    past_names,
    present_names,
)
from lora.families.moonshine.reference import (
    cpu_sessions,
    greedy_tokens,
    max_new_tokens,
)

TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "config.json"


class OnnxMoonshine:
    def __init__(self, model_dir: str | Path, threads: int | None = None):
        from tokenizers import Tokenizer

        self.model_dir = Path(model_dir)
        for name in (ENCODER_FILE, DECODER_FILE, TOKENIZER_FILE, CONFIG_FILE):
            if not (self.model_dir / name).is_file():
                raise UserError(f"{self.model_dir / name}: missing; export again with lora-export --format onnx")
        config = json.loads((self.model_dir / CONFIG_FILE).read_text())
        self.layers = config["decoder_num_hidden_layers"]
        self.heads = config["decoder_num_key_value_heads"]
        self.head_dim = config["hidden_size"] // config["decoder_num_attention_heads"]
        self.bos, self.eos = config["decoder_start_token_id"], config["eos_token_id"]
        self.encoder, self.decoder = cpu_sessions(self.model_dir, (ENCODER_FILE, DECODER_FILE), threads)
        self.tokenizer = Tokenizer.from_file(str(self.model_dir / TOKENIZER_FILE))

    def generate(self, audio: np.ndarray, max_tokens: int | None = None) -> list[int]:
        """Greedy token ids after the start token, up to and excluding end-of-sequence."""
        limit = max_tokens if max_tokens is not None else max_new_tokens(len(audio))
        values = np.ascontiguousarray(audio, dtype=np.float32).reshape(1, -1)
        cross = dict(zip(cross_names(self.layers), self.encoder.run(None, {"input_values": values})))
        empty = np.zeros((1, self.heads, 0, self.head_dim), dtype=np.float32)
        past = {name: empty for name in past_names(self.layers)}
        outputs = ["logits", *present_names(self.layers)]

        def step(token: int, first: bool) -> np.ndarray:
            nonlocal past
            logits, *present = self.decoder.run(outputs, {"input_ids": np.array([[token]], dtype=np.int64), **past, **cross})
            past = dict(zip(past_names(self.layers), present))
            return logits

        return greedy_tokens(step, self.bos, self.eos, limit, values.shape[1] / SAMPLE_RATE)  # loop guard on

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True).strip()

    def transcribe(self, audio: np.ndarray, max_tokens: int | None = None) -> tuple[list[int], str]:
        ids = self.generate(audio, max_tokens)
        return ids, self.decode(ids)
