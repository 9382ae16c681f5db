"""Write an `audiofolder` (metadata.csv + copies of the audio) from the real speech of ../shared/speech.

The folder is what `datasets.load_dataset("audiofolder", data_dir=...)` and `lora.data.hf_sources`
read: `metadata.csv` with `file_name,text,speaker_id,id,subset,seconds`, audio files beside it
under `<subset>/`. Default subsets: LibriSpeech (test-clean, dev-clean), LJSpeech and JFK.
Written to a temp folder beside `--output`, then renamed into place: readers never see half a
folder. Usage:

    uv run python scripts/make_audiofolder.py --output data/audiofolder
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path

from lora.core.errors import EXIT_USER_ERROR, UserError
from lora.core.outputs import replace_dir

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SPEECH_DIR = Path(os.environ.get("LORA_SPEECH_DIR") or ROOT.parent / "shared" / "speech")
DEFAULT_SUBSETS = ("test-clean", "dev-clean", "ljspeech", "jfk")
COLUMNS = ("file_name", "text", "speaker_id", "id", "subset", "seconds")


@dataclass(frozen=True)
class Options:
    output: Path = field(metadata={"help": "audiofolder to write (replaced atomically if it is one already)"})
    speech_dir: Path = field(default=DEFAULT_SPEECH_DIR, metadata={"help": "folder holding manifest.jsonl "
                                                                           "(default: $LORA_SPEECH_DIR or ../shared/speech)"})
    subsets: tuple[str, ...] = field(default=DEFAULT_SUBSETS, metadata={"help": "comma-separated subsets to copy"})


def select_rows(manifest_rows: list[dict], subsets: tuple[str, ...]) -> list[dict]:
    """Rows of the chosen subsets, in manifest order; a subset with no rows is an error."""
    present = {row["subset"] for row in manifest_rows}
    missing = [s for s in subsets if s not in present]
    if missing:
        raise UserError(f"no utterances for subset(s) {', '.join(missing)} (the manifest has {', '.join(sorted(present))})")
    return [row for row in manifest_rows if row["subset"] in subsets]


def metadata_csv(rows: list[dict]) -> str:
    """The metadata.csv text: one row per file, `file_name` relative to the folder."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow([f"{row['subset']}/{Path(row['path']).name}", row["text"], row["speaker"], row["id"],
                         row["subset"], row["seconds"]])
    return buffer.getvalue()


def read_manifest_rows(speech_dir: Path) -> list[dict]:
    manifest = speech_dir / "manifest.jsonl"
    if not manifest.is_file():
        raise UserError(f"{manifest}: not found; pass --speech-dir (the shared speech folder)")
    return [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines() if line.strip()]


def make_audiofolder(options: Options) -> Path:
    """Copy the chosen utterances and write metadata.csv, atomically; returns the folder."""
    output = Path(options.output)
    if output.exists() and not (output / "metadata.csv").is_file():
        raise UserError(f"{output}: exists and is not an audiofolder; choose another --output")
    rows = select_rows(read_manifest_rows(options.speech_dir), options.subsets)
    tmp = output.with_name(f".{output.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for row in rows:
            target = tmp / row["subset"] / Path(row["path"]).name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(options.speech_dir / row["path"], target)
        (tmp / "metadata.csv").write_text(metadata_csv(rows), encoding="utf-8")
        output.parent.mkdir(parents=True, exist_ok=True)
        return replace_dir(tmp, output)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def parse_args(argv: list[str] | None = None) -> Options:
    helps = {f.name: f.metadata["help"] for f in fields(Options)}
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, required=True, help=helps["output"])
    parser.add_argument("--speech-dir", type=Path, default=DEFAULT_SPEECH_DIR, help=helps["speech_dir"])
    parser.add_argument("--subsets", default=",".join(DEFAULT_SUBSETS), help=helps["subsets"])
    args = parser.parse_args(argv)
    subsets = tuple(s.strip() for s in args.subsets.split(",") if s.strip())
    return Options(output=args.output, speech_dir=args.speech_dir, subsets=subsets)


def main(argv: list[str] | None = None) -> int:
    try:
        options = parse_args(argv)
        folder = make_audiofolder(options)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    count = sum(1 for _ in (folder / "metadata.csv").open()) - 1
    print(f"wrote {folder}: {count} utterances ({', '.join(options.subsets)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
