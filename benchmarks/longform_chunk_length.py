"""Does a shorter long-form chunk stop a model counting on past the audio? WER by `max_chunk_s`.

    uv run python benchmarks/longform_chunk_length.py --model moonshine-base-en [--max-chunk-s 30,20,15,10]

On the digits recipe's training speakers only (FSDD 9201-9204, each speaker's takes joined in id order: 0..9
five times) and the dev-clean chapters of ../shared/speech: held-out speakers stay untouched. Scored as
benchmarks/longform.py scores (digit tokens for FSDD, the Whisper normaliser otherwise). One JSON line per
recording and chunk length, appended to --out as each finishes (a slow run can be stopped and still read).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from longform import RESULTS, speech_dir, word_errors  # noqa: E402  (the bench's scoring, not a copy)
from lora.data.long_recordings import chapter_groups, join_utterances  # noqa: E402
from lora.data.records import read_librispeech_dir  # noqa: E402

TRAIN_SPEAKERS = ("9201", "9202", "9203", "9204")  # lora.runners.digits.TRAIN_SPEAKERS


def recordings(root: Path) -> list[tuple[str, object]]:
    fsdd = read_librispeech_dir(root, ["fsdd"])
    out = [("fsdd", join_utterances(rid, utts)) for spk in TRAIN_SPEAKERS
           for rid, utts in chapter_groups([u for u in fsdd if u.speaker == spk]).items()]
    out += [("dev-clean", join_utterances(rid, utts))
            for rid, utts in chapter_groups(read_librispeech_dir(root, ["dev-clean"])).items()]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="moonshine-base-en")
    parser.add_argument("--max-chunk-s", default="30,20,15,10")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    from lora.longform import LongformOptions, torch_transcriber, transcribe_long  # heavy (torch): after parsing
    from lora.model_utils import load_base, resolve_model_id

    out = args.out or RESULTS / f"longform_chunk_length_{args.model}.jsonl"
    recs = recordings(speech_dir())
    model, processor, family = load_base(resolve_model_id(args.model))
    transcribe = torch_transcriber(model, processor, family, 8)
    for max_s in (float(x) for x in args.max_chunk_s.split(",")):
        for corpus, rec in recs:
            started = time.perf_counter()
            long = transcribe_long(rec.samples, transcribe, LongformOptions(max_chunk_s=max_s))
            errors, words = word_errors([rec.text], [long.text], corpus == "fsdd")
            row = {"model": args.model, "max_chunk_s": max_s, "recording": rec.id, "corpus": corpus,
                   "seconds": round(rec.seconds, 1), "ref_words": words, "wer": round(errors / words, 3),
                   "chunks": len(long.segments), "wall_s": round(time.perf_counter() - started, 1),
                   "hypothesis": long.text}
            print(json.dumps({k: v for k, v in row.items() if k != "hypothesis"}), flush=True)
            with out.open("a", encoding="utf-8") as f:  # appended line by line on purpose: a partial run is readable
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
