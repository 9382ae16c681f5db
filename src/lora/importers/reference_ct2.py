"""Reference runtime for Whisper tiny.en: ctranslate2 on the packaged CTranslate2 directory.

Greedy (beam 1), English-only prompt without timestamps, the same log-mel features transformers
uses (WhisperFeatureExtractor, 30 s window): parity with our converted model is then a statement
about the weights and the decoder, not about feature extraction.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lora.audio import SAMPLE_RATE

PROMPT = ["<|startoftranscript|>", "<|notimestamps|>"]


class Ct2Whisper:
    def __init__(self, model_dir: str | Path | None = None, threads: int = 0, max_length: int = 448):
        import ctranslate2
        from tokenizers import Tokenizer
        from transformers import WhisperFeatureExtractor

        from lora.importers.whisper import package_dir

        self.model_dir = Path(model_dir) if model_dir else package_dir()
        self.model = ctranslate2.models.Whisper(str(self.model_dir), device="cpu", intra_threads=threads)
        self.tokenizer = Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
        self.features = WhisperFeatureExtractor(feature_size=80)
        self.max_length = max_length

    def transcribe_batch(self, audios: list[np.ndarray], max_new_tokens: list[int] | None = None) -> list[tuple[list[int], str]]:
        """(token ids, text) per clip; ids exclude the prompt and <|endoftext|>."""
        import ctranslate2

        feats = self.features(audios, sampling_rate=SAMPLE_RATE, return_tensors="np").input_features
        limit = max(max_new_tokens) if max_new_tokens else self.max_length
        results = self.model.generate(ctranslate2.StorageView.from_array(np.ascontiguousarray(feats, dtype=np.float32)),
                                      [PROMPT] * len(audios), beam_size=1, max_length=limit + len(PROMPT),
                                      suppress_blank=True)
        out = []
        for res in results:
            ids = list(res.sequences_ids[0])
            out.append((ids, self.tokenizer.decode(ids, skip_special_tokens=True).strip()))
        return out

    def transcribe(self, audio: np.ndarray, max_new_tokens: int | None = None) -> tuple[list[int], str]:
        return self.transcribe_batch([audio], [max_new_tokens] if max_new_tokens else None)[0]
