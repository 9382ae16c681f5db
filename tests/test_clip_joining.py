import numpy as np

from lora.data.clip_joining import with_joined_clips
from lora.data.records import Utterance


def _clips(speaker: str, n: int) -> list[Utterance]:
    return [Utterance(f"{speaker}-{i}", speaker, f"W{i}", np.full(100 + i, i, np.float32)) for i in range(n)]


def test_joined_runs_stay_within_one_speaker_and_keep_audio_and_text_in_order():
    clips = _clips("a", 7) + _clips("b", 5)
    out = with_joined_clips(clips, most=3, seed=1)
    assert out[: len(clips)] == clips  # the single clips stay
    joined = out[len(clips):]
    assert joined
    by_id = {u.id: u for u in clips}
    for u in joined:
        parts = [by_id[i] for i in u.extra["joined_from"]]
        assert 2 <= len(parts) <= 3 and {p.speaker for p in parts} == {u.speaker}
        assert u.text == " ".join(p.text for p in parts)
        assert np.array_equal(u.samples(), np.concatenate([p.samples() for p in parts]))
    used = [i for u in joined for i in u.extra["joined_from"]]
    assert len(used) == len(set(used))  # each clip joins at most one run


def test_off_by_default_and_deterministic():
    clips = _clips("a", 6)
    assert with_joined_clips(clips, most=1) == clips
    ids = lambda s: [u.id for u in with_joined_clips(clips, 3, seed=s)]  # noqa: E731
    assert ids(4) == ids(4)
