"""`lora join --subset ljspeech --output data/lj_joined.flac --transcript-out data/lj_joined.txt [--seconds 60]`

Builds one long real recording for the long-form path: consecutive utterances of one speaker of a
LibriSpeech-layout speech folder (default ../shared/speech), joined end to end (cycled until --seconds
is reached; --seconds 3600 gives an hour), written as 16 kHz FLAC with its transcript beside it and a
JSON of the utterance boundaries (`<output>.bounds.json`). Everything is written atomically.
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

from lora.core.cli import ArgumentParser, run_cli, setup_logging
from lora.core.errors import UserError
from lora.core.outputs import check_output_file, write_bytes_atomic, write_text_atomic
from lora.core.paths import default_speech_dir
from lora.data.long_recordings import join_utterances, repeat_to_length, speaker_utterances
from lora.data.records import list_subsets, read_librispeech_dir


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="lora join", description=__doc__.split("\n\n")[1])
    parser.add_argument("--data-dir", default=None, help="LibriSpeech-layout folder (default: ../shared/speech)")
    parser.add_argument("--subset", required=True, help="subset folder to take the utterances from (e.g. ljspeech)")
    parser.add_argument("--speaker", default=None, help="speaker id (default: the one with the most audio)")
    parser.add_argument("--seconds", type=float, default=60.0, help="at least this long (utterances cycled; default 60)")
    parser.add_argument("--output", required=True, help="FLAC file to write")
    parser.add_argument("--transcript-out", default=None, help="transcript file (default: <output>.txt)")
    parser.add_argument("--quiet", action="store_true", help="warnings only")
    return parser


def _main(argv: list[str] | None) -> int:
    import soundfile as sf  # deferred: keeps --help fast

    args = build_parser().parse_args(argv)
    setup_logging(args.quiet)
    root = Path(args.data_dir) if args.data_dir else default_speech_dir()
    if root is None or not Path(root).is_dir():
        raise UserError(f"{args.data_dir or '../shared/speech'}: no speech folder; pass --data-dir DIR")
    available = list_subsets(Path(root))
    if args.subset not in available:
        raise UserError(f"{root}: no subset {args.subset!r}; available: {', '.join(available)}")
    if not 0 < args.seconds <= 4 * 3600:
        raise UserError(f"--seconds {args.seconds:g}: must be above 0 and at most 14400 (4 h)")
    output = Path(args.output)
    if output.suffix.lower() != ".flac":
        raise UserError(f"{output}: the output is written as FLAC; name it *.flac")
    transcript = Path(args.transcript_out) if args.transcript_out else output.with_suffix(".txt")
    bounds_file = output.with_name(output.name + ".bounds.json")
    for flag, path in (("--output", output), ("--transcript-out", transcript), ("--output", bounds_file)):
        check_output_file(path, flag)  # before the audio is written: no FLAC without its transcript
    if transcript.expanduser().resolve() == output.expanduser().resolve():
        raise UserError(f"--transcript-out {transcript} is also --output; give the transcript its own file")
    try:
        rows = speaker_utterances(read_librispeech_dir(Path(root), [args.subset]), args.speaker)
    except ValueError as exc:
        raise UserError(f"{root}/{args.subset}: {exc}; pass --speaker with one of them") from None
    joined = join_utterances(f"{args.subset}-joined", repeat_to_length(rows, args.seconds))
    buf = io.BytesIO()
    sf.write(buf, joined.samples, 16000, format="FLAC", subtype="PCM_16")
    write_bytes_atomic(output, buf.getvalue())
    write_text_atomic(transcript, joined.text + "\n")
    bounds = [{"id": u.id, "start_s": round(a, 3), "end_s": round(b, 3), "text": u.text}
              for u, (a, b) in zip(joined.utterances, joined.bounds)]
    write_text_atomic(bounds_file, json.dumps(bounds, indent=1) + "\n")
    print(f"joined {len(joined.utterances)} utterances of speaker {joined.speaker} ({joined.seconds:.1f} s) "
          f"-> {output} + {transcript}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
