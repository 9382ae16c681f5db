"""Where real speech comes from: manifests, LibriSpeech-layout folders, the hub stream, plus the
replay and canary sets. Every local row passes preflight before it is used.

Hub audio is taken undecoded (`Audio(decode=False)`) and decoded with soundfile: no FFmpeg or
torchcodec. Never silence, noise or synthetic audio.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

from lora.core.audio import SAMPLE_RATE
from lora.core.errors import UserError
from lora.core.paths import default_speech_dir
from lora.data.manifest import read_source
from lora.data.preflight import preflight
from lora.data.records import Utterance, list_subsets, read_librispeech_dir, split_folder
from lora.data.selection import select_balanced

log = logging.getLogger("lora")

HUB_DATASET = "librispeech_asr"
HUB_EVAL_SPLIT = "validation"
# General read speech scored before and after training to measure forgetting.
# Corpora up to this size are fully decoded by preflight; larger ones get header checks (see `checked`).
FULL_DECODE_MAX_ROWS = 2000
CANARY_SUBSETS = ("test-clean", "dev-clean", "test-other", "dev-other", "ljspeech")


def checked(rows: list[Utterance], bad=(), quarantine_path: str | None = None, source: str = "",
            require_text: bool = True) -> list[Utterance]:
    """Preflight: the usable rows; unusable ones are logged and listed in the quarantine file."""

    report = preflight(rows, bad, quarantine_path=quarantine_path, require_text=require_text, quiet=True, source=source)
    return list(report.good)


def read_manifest_rows(path: str | Path, quarantine_path: str | None = None) -> list[Utterance]:
    """Usable rows of a manifest in any supported format (after preflight)."""

    read = read_source(Path(path))
    return checked(list(read.rows), read.bad, quarantine_path, read.source)


def hub_stream(split: str, limit: int | None, seed: int = 42) -> list[Utterance]:
    """Up to `limit` utterances (None: the whole split) of `librispeech_asr` streamed from the hub.

    Audio is cast to `Audio(decode=False)` so `datasets` hands over the encoded bytes and no
    FFmpeg/torchcodec is needed; rows keep those bytes (FLAC: about a third of decoded float32) and
    their duration from the header, and the loader's workers decode them with soundfile.
    """
    import datasets
    import soundfile as sf

    config = "other" if "other" in split else "clean"
    hub_split = split.replace("clean.", "").replace("other.", "")
    stream = datasets.load_dataset(HUB_DATASET, config, split=hub_split, streaming=True)
    stream = stream.cast_column("audio", datasets.Audio(decode=False))
    rows: list[Utterance] = []
    for item in stream:
        audio = item["audio"]
        data = audio.get("bytes") or Path(audio["path"]).read_bytes()
        info = sf.info(io.BytesIO(data))
        rows.append(
            Utterance(
                id=str(item["id"]),
                speaker=str(item["speaker_id"]),
                text=item["text"],
                audio=data,
                sampling_rate=SAMPLE_RATE,
                origin=f"hub:{HUB_DATASET}/{config}/{hub_split}",
                subset=hub_split,
                extra={"seconds": info.frames / info.samplerate},
            )
        )
        if limit is not None and len(rows) >= limit:
            break
    return rows


def local_pools(root: Path, train_split: str) -> tuple[list[Utterance], list[Utterance] | None, str, str]:
    """(train pool, eval pool or None to split by speaker, where, the subsets used) from a LibriSpeech-layout folder."""
    subsets = list_subsets(root)
    wanted = split_folder(train_split)
    if wanted in subsets:
        train = read_librispeech_dir(root, [wanted])
        eval_folder = split_folder(HUB_EVAL_SPLIT)
        held = read_librispeech_dir(root, [eval_folder]) if eval_folder in subsets and eval_folder != wanted else None
        return train, held, f"{root}/{wanted}", wanted
    pool_subsets = [s for s in subsets if not s.startswith("test")]
    if not pool_subsets:
        raise UserError(f"{root}: no training subsets found (only {subsets}); add a LibriSpeech-layout subset, or "
                        "pass a folder of other recordings as --manifest (a manifest inside, or transcripts beside the audio)")
    log.info(
        "split %r (%s) is not in %s; training on a speaker-disjoint part of %s (test-* folders left out)",
        train_split, wanted, root, ", ".join(pool_subsets),
    )
    return read_librispeech_dir(root, pool_subsets), None, f"{root} [{'+'.join(pool_subsets)}]", "+".join(pool_subsets)


def replay_rows(subsets: tuple[str, ...], data_dir: str | None, held: list[Utterance]) -> list[Utterance]:
    """General-speech rows for replay, leaving evaluation speakers out."""
    if not subsets:
        return []
    root = Path(data_dir) if data_dir else default_speech_dir()
    rows = read_librispeech_dir(root, list(subsets)) if root else []
    eval_speakers = {u.speaker for u in held}
    rows = [u for u in rows if u.speaker not in eval_speakers]
    if not rows:
        raise UserError(f"--replay-subsets {','.join(subsets)}: no utterances found in {root}")
    return rows


def canary_utterances(root: Path | None, exclude: list[Utterance], limit: int = 0, seed: int = 42) -> list[Utterance]:
    """General read speech (LibriSpeech/LJSpeech subsets) from speakers not trained or evaluated on."""
    if root is None or not Path(root).is_dir():
        return []
    subsets = [s for s in list_subsets(root) if s in CANARY_SUBSETS]
    busy = {u.speaker for u in exclude}
    rows = [u for u in read_librispeech_dir(root, subsets) if u.speaker not in busy] if subsets else []
    return select_balanced(rows, limit, seed) if limit else rows

