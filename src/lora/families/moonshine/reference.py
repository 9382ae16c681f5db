"""The reference runtime: the packaged Moonshine `.ort` graphs run by ONNX Runtime, greedy decoding.

Why: a converted checkpoint is only trustworthy if it transcribes like the original. The
`moonshine-cpp` package's own native library crashes on these CPUs, so the original is its two
graphs (encoder; merged decoder with an `If` between the first step and cached steps) run by
`onnxruntime`, decoded with the package's own `tokenizer.bin`. Parity tests and benchmarks use it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lora.core.audio import SAMPLE_RATE
from lora.core.errors import UserError
from lora.core.extras import install_hint, require_extra
from lora.families.moonshine.family import MOONSHINE
from lora.loop_guard import TOKEN_GUARD, ends_in_loop, loop_cut
from lora.weight_formats.spm_vocab import package_decode, read_records

ENCODER_FILE = "encoder_model.ort"
DECODER_FILE = "decoder_model_merged.ort"
TOKENIZER_FILE = "tokenizer.bin"
BOS_ID, EOS_ID = 1, 2
NUM_LAYERS, NUM_HEADS, HEAD_DIM = 8, 8, 52


def max_new_tokens(num_samples: int, sampling_rate: int = SAMPLE_RATE) -> int:
    """The family's generation cap (tokens per second of audio), the one training and eval use."""
    return MOONSHINE.max_new_tokens(num_samples / sampling_rate)


def greedy_tokens(step, bos: int, eos: int, limit: int, seconds: float | None = None) -> list[int]:
    """Greedy token ids after `bos`, up to and excluding `eos`, at most `limit`.

    `step(token, first) -> logits` runs one decoder call and carries its own key/value cache; the
    packaged graphs and the exported ones differ only in that call, so both runners share this loop.
    With `seconds` (the clip's length) the loop guard runs as in PyTorch decoding: decoding stops as
    soon as the tokens end in a loop the audio cannot hold (`lora.loop_guard.TOKEN_GUARD`), and the
    ids are cut after the first copy of the looping n-gram (`loop_cut`).
    """
    tokens: list[int] = []
    current = bos
    for i in range(limit):
        current = int(np.argmax(step(current, i == 0)[0, -1]))
        if current == eos:
            break
        tokens.append(current)
        if seconds is not None and ends_in_loop(tokens, seconds, TOKEN_GUARD):
            break
    if seconds is not None:
        cut = loop_cut(tokens, seconds, TOKEN_GUARD)
        return tokens if cut is None else tokens[:cut]
    return tokens


def cpu_sessions(model_dir: Path, names: tuple[str, ...], threads: int | None = None) -> list:
    """One onnxruntime CPU session per graph file in `model_dir` (shared by the packaged and exported runners)."""
    ort = require_extra("onnxruntime", "moonshine", "running Moonshine ONNX graphs")

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return [ort.InferenceSession(str(model_dir / name), options, providers=["CPUExecutionProvider"]) for name in names]


def packaged_model_dir() -> Path:
    """`moonshine_cpp/models/base-en` of the installed package (no import of its broken module)."""
    from importlib import util

    spec = util.find_spec("moonshine_cpp")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"the optional package 'moonshine-cpp' is not installed; install the 'moonshine' extra: "
                        f"{install_hint('moonshine')}")
    return Path(next(iter(spec.submodule_search_locations))) / "models" / "base-en"


class OrtMoonshine:
    """Greedy Moonshine transcription with ONNX Runtime on the packaged graphs (CPU)."""

    def __init__(self, model_dir: str | Path | None = None, threads: int | None = None):
        self.model_dir = Path(model_dir) if model_dir else packaged_model_dir()
        for name in (ENCODER_FILE, DECODER_FILE, TOKENIZER_FILE):
            if not (self.model_dir / name).is_file():
                raise UserError(f"{self.model_dir / name}: missing Moonshine model file")
        self.encoder, self.decoder = cpu_sessions(self.model_dir, (ENCODER_FILE, DECODER_FILE), threads)
        self.output_names = [o.name for o in self.decoder.get_outputs()]
        self.records = read_records(self.model_dir / TOKENIZER_FILE)

    def encode(self, audio: np.ndarray) -> np.ndarray:
        """Encoder hidden states (1, frames, 416) for float32 16 kHz mono samples."""
        values = np.ascontiguousarray(audio, dtype=np.float32).reshape(1, -1)
        return self.encoder.run(["last_hidden_state"], {"input_values": values})[0]

    def generate(self, audio: np.ndarray, max_tokens: int | None = None) -> list[int]:
        """Greedy token ids after the start token, up to and excluding end-of-sequence."""
        limit = max_tokens if max_tokens is not None else max_new_tokens(len(audio))
        hidden = self.encode(audio)
        empty = np.zeros((1, NUM_HEADS, 0, HEAD_DIM), dtype=np.float32)
        past = {f"past_key_values.{i}.{part}.{kv}": empty
                for i in range(NUM_LAYERS) for part in ("decoder", "encoder") for kv in ("key", "value")}

        def step(token: int, first: bool) -> np.ndarray:
            feeds = {"input_ids": np.array([[token]], dtype=np.int64), "encoder_hidden_states": hidden,
                     "use_cache_branch": np.array([not first]), **past}
            outputs = dict(zip(self.output_names, self.decoder.run(self.output_names, feeds)))
            for name, value in outputs.items():
                # Cached steps return empty encoder k/v: the first step's values stay in use.
                if name.startswith("present.") and (first or ".decoder." in name):
                    past[name.replace("present.", "past_key_values.")] = value
            return outputs["logits"]

        return greedy_tokens(step, BOS_ID, EOS_ID, limit, len(audio) / SAMPLE_RATE)

    def decode(self, ids: list[int]) -> str:
        """Text of token ids with the package tokenizer (`tokenizer.bin`, C++ BinTokenizer rules)."""
        return package_decode(self.records, ids)

    def transcribe(self, audio: np.ndarray, max_tokens: int | None = None) -> tuple[list[int], str]:
        """(token ids, text) of greedy decoding, capped at ~13 tokens per second of audio."""
        ids = self.generate(audio, max_tokens)
        return ids, self.decode(ids)
