"""Narrow-band replay copies (recipes/digits_sweep.py `narrowband_copies`, its `--grid style`)."""

import importlib.util
from pathlib import Path

import numpy as np

from lora.core.audio import SAMPLE_RATE
from lora.data.records import read_librispeech_dir
from lora.data.selection import mix_replay

_PATH = Path(__file__).resolve().parents[1] / "recipes" / "digits_sweep.py"
_spec = importlib.util.spec_from_file_location("digits_sweep_narrowband", _PATH)
_sweep = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_sweep)
narrowband_copies = _sweep.narrowband_copies


def _band_energy(samples: np.ndarray, low_hz: float) -> float:
    spectrum = np.abs(np.fft.rfft(samples)) ** 2
    freqs = np.fft.rfftfreq(len(samples), 1 / SAMPLE_RATE)
    return float(spectrum[freqs >= low_hz].sum() / spectrum.sum())


def test_copies_are_the_same_real_speech_cut_to_four_kilohertz(speech_dir):
    rows = read_librispeech_dir(speech_dir, ["jfk"])[:1] + read_librispeech_dir(speech_dir, ["dev-clean"])[:1]
    copies = narrowband_copies(rows)
    assert [c.id for c in copies] == [u.id + "~8k" for u in rows]
    for u, c in zip(rows, copies, strict=True):
        assert (c.speaker, c.text, c.subset, c.sampling_rate) == (u.speaker, u.text, u.subset, 8000)
        wide, narrow = u.samples(), c.samples()  # back at 16 kHz, as the loader reads them
        assert abs(len(narrow) - len(wide)) <= 2
        assert _band_energy(wide, 4200) > 1e-5  # the original has energy above 4 kHz (JFK: 3.7e-5, dev-clean: 5e-3) ...
        assert _band_energy(narrow, 4200) < 1e-7  # ... the copy none (1.5e-9, 6.6e-10)
        # below 3.5 kHz the copy is the original (the pass band of soxr's filter)
        lo_w = np.fft.rfft(wide)[: int(3500 * len(wide) / SAMPLE_RATE)]
        lo_n = np.fft.rfft(narrow[: len(wide)])[: len(lo_w)]
        assert np.linalg.norm(lo_w - lo_n) < 0.05 * np.linalg.norm(lo_w)


def test_copies_join_the_replay_share_as_distinct_rows(speech_dir):
    replay = read_librispeech_dir(speech_dir, ["jfk"])
    train = read_librispeech_dir(speech_dir, ["dev-clean"])
    mixed = mix_replay(train, replay + narrowband_copies(replay), 0.5)
    ids = [u.id for u in mixed[len(train):]]
    assert len(ids) >= 2 and {i.removesuffix("~8k") for i in ids} == {u.id for u in replay}
    assert any(i.endswith("~8k") for i in ids) and any(not i.endswith("~8k") for i in ids)
