"""The reference runtime for Whisper tiny.en: ctranslate2 on the packaged CTranslate2 directory.

Why: a converted checkpoint is only trustworthy if it transcribes like the original, and the
original is the faster-whisper conversion run by `ctranslate2`. Parity tests and benchmarks use it.

Decoding: greedy (beam 1), English-only prompt <|startoftranscript|><|notimestamps|>, the model's
own suppression lists (`suppress_tokens=[-1]` = config.json `suppress_ids`, `suppress_blank` =
`suppress_ids_begin` at the first step), as the transformers generation config of the converted
model decodes. Features: ctranslate2 takes log-mel features, not audio; we compute them with
transformers' `WhisperFeatureExtractor` (80 mels, padded/truncated to 30 s = 3000 frames, openai's
recipe) so that parity with the converted model is a statement about weights and decoding, not about
two feature implementations. Clips longer than 30 s are truncated (no long-form decoding here).

Loop guard: CTranslate2's own `no_repeat_ngram_size` forbids any repeat of an n-gram anywhere (it breaks
"zero zero seven") and `repetition_penalty` reweights every repeated token; neither knows the clip's
length, so neither is set. Instead, where the audio length is known (`transcribe_batch`), each output's
ids are cut after the first copy of a token loop the audio cannot hold (`loop_cut`, TOKEN_GUARD) and the
text passes through `trim_loops`, as PyTorch decoding does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lora.core.audio import SAMPLE_RATE
from lora.core.extras import require_extra
from lora.families.whisper.importer import package_dir
from lora.loop_guard import TOKEN_GUARD, loop_cut, trim_loops

PROMPT = ("<|startoftranscript|>", "<|notimestamps|>")
MAX_LENGTH = 448  # decoder positions; ctranslate2's max_length counts the prompt too
DEFAULT_BATCH_SIZE = 16  # clips per ctranslate2 call: bounds memory (30 s of features each)


@dataclass(frozen=True)
class Ct2Transcript:
    """Generated token ids (prompt and <|endoftext|> excluded) and their decoded text."""

    ids: tuple[int, ...]
    text: str


def generation_limit(max_new_tokens: int | None) -> int:
    """ctranslate2 `max_length` for at most `max_new_tokens` generated tokens (None: the model's cap).

    ctranslate2's Whisper decodes at most min(max_length / 2, max_length - prompt) tokens (whisper.cc,
    OpenNMT/CTranslate2#1856: openai's half-context sampling cap), so the length asked for is doubled.
    """
    if max_new_tokens is None:
        return MAX_LENGTH
    wanted = max(1, int(max_new_tokens))
    return min(MAX_LENGTH, max(2 * wanted, wanted + len(PROMPT)))


class Ct2Whisper:
    """Greedy, timestamp-free ctranslate2 transcription of 16 kHz mono float32 audio.

    `compute_type="float32"` by default: the packaged weights are fp16, but CPUs compute in fp32 anyway
    and an explicit type keeps results independent of the machine; pass "float16" on a GPU to time the
    runtime as deployed.
    """

    def __init__(self, model_dir: str | Path | None = None, device: str = "cpu", compute_type: str = "float32",
                 threads: int = 0, batch_size: int = DEFAULT_BATCH_SIZE):
        ctranslate2 = require_extra("ctranslate2", "whisper", "running Whisper in CTranslate2")
        from tokenizers import Tokenizer
        from transformers import WhisperFeatureExtractor


        self.model_dir = Path(model_dir) if model_dir else package_dir()
        # intra_threads=0 means "4" to ctranslate2 whatever the cores: on a 2-core machine that is twice
        # oversubscribed. Pin it like torch (its thread count), so both runtimes get the same cores.
        import torch

        self.threads = threads or torch.get_num_threads()
        self.model = ctranslate2.models.Whisper(str(self.model_dir), device=device, compute_type=compute_type,
                                                intra_threads=self.threads)
        self.tokenizer = Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
        self.feature_extractor = WhisperFeatureExtractor(feature_size=self.model.n_mels)
        self.batch_size = batch_size

    def features(self, audios: Sequence[np.ndarray]) -> np.ndarray:
        """Log-mel features [batch, n_mels, 3000], float32 (the 30 s window Whisper is trained on)."""
        clips = [np.asarray(a, dtype=np.float32) for a in audios]
        feats = self.feature_extractor(clips, sampling_rate=SAMPLE_RATE, return_tensors="np").input_features
        return np.ascontiguousarray(feats, dtype=np.float32)

    def decode_features(self, features: np.ndarray, max_new_tokens: int | None = None,
                        seconds: Sequence[float] | None = None) -> list[Ct2Transcript]:
        """Greedy-decode one batch of log-mel features (loop-guarded when the clips' `seconds` are given)."""
        import ctranslate2

        results = self.model.generate(ctranslate2.StorageView.from_array(features), [list(PROMPT)] * len(features),
                                      beam_size=1, max_length=generation_limit(max_new_tokens))
        if seconds is None:
            return [self._transcript(r.sequences_ids[0]) for r in results]
        return [self._guarded(r.sequences_ids[0], s) for r, s in zip(results, seconds, strict=True)]

    def transcribe_batch(self, audios: Sequence[np.ndarray], max_new_tokens: int | None = None) -> list[Ct2Transcript]:
        """One transcript per clip, in order; clips go to ctranslate2 `batch_size` at a time."""
        out: list[Ct2Transcript] = []
        for start in range(0, len(audios), self.batch_size):
            chunk = audios[start:start + self.batch_size]
            out += self.decode_features(self.features(chunk), max_new_tokens, [len(a) / SAMPLE_RATE for a in chunk])
        return out

    def transcribe(self, audio: np.ndarray, max_new_tokens: int | None = None) -> Ct2Transcript:
        return self.transcribe_batch([audio], max_new_tokens)[0]

    def _guarded(self, ids: list[int], seconds: float) -> Ct2Transcript:
        cut = loop_cut(ids, seconds, TOKEN_GUARD)
        kept = list(ids) if cut is None else list(ids)[:cut]
        text = self.tokenizer.decode(kept, skip_special_tokens=True).strip()
        return Ct2Transcript(tuple(kept), trim_loops(text, seconds))

    def _transcript(self, ids: list[int]) -> Ct2Transcript:
        return Ct2Transcript(tuple(ids), self.tokenizer.decode(list(ids), skip_special_tokens=True).strip())
