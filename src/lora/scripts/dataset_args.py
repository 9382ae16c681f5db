"""`--dataset` and its column options for `lora eval` and `lora stt` (`lora train` has them as
`TrainConfig` fields): any dataset `lora.data.hf_sources.read_dataset` reads."""

from __future__ import annotations

import argparse

from lora.data.hf_sources import HFSourceOptions

DATASET_HELP = ("Hugging Face-style dataset: a save_to_disk folder, an audiofolder (metadata.csv/jsonl + audio), "
                "Parquet/Arrow files (file, glob or folder), a Common Voice folder or a hub dataset name (streamed)")


def add_dataset_args(parser: argparse.ArgumentParser, group=None) -> None:
    """`--dataset` (into `group`, e.g. a mutually exclusive source group) and the column/split options."""
    (group or parser).add_argument("--dataset", default=None, help=DATASET_HELP)
    parser.add_argument("--dataset-split", default="train", help="split of --dataset (default: train)")
    parser.add_argument("--audio-column", default=None, help="audio column of --dataset (default: first of audio, path, "
                        "file_name, file, audio_filepath)")
    parser.add_argument("--text-column", default=None, help="transcript column of --dataset (default: first of text, "
                        "sentence, transcription, transcript, normalized_text)")
    parser.add_argument("--speaker-column", default=None, help="speaker column of --dataset (default: first of "
                        "speaker_id, speaker, client_id)")


def dataset_options(args: argparse.Namespace, max_rows: int | None = None) -> HFSourceOptions:
    return HFSourceOptions(split=args.dataset_split, audio_column=args.audio_column, text_column=args.text_column,
                           speaker_column=args.speaker_column, max_rows=max_rows or None)
