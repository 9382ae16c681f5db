"""Long real recordings for the tests: consecutive real utterances of one speaker joined and written as FLAC."""

from __future__ import annotations

from pathlib import Path

import soundfile as sf

from lora.core.audio import SAMPLE_RATE
from lora.data.long_recordings import join_utterances, repeat_to_length, speaker_utterances
from lora.data.records import read_librispeech_dir


def joined_flac(speech_dir: Path, out: Path, seconds: float, subset: str = "ljspeech") -> tuple[Path, str]:
    """A FLAC of at least `seconds` of one speaker's utterances of `subset` (repeated as needed), and its text."""
    rows = speaker_utterances(read_librispeech_dir(speech_dir, [subset]))
    joined = join_utterances("joined", repeat_to_length(rows, seconds))
    sf.write(str(out), joined.samples, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    return out, joined.text
