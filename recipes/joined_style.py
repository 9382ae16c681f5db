"""How the base models write a run of spoken digits, against the joined clips' targets ("Five. Three. Two.").

The digits recipe joins one-word clips of a training speaker into runs of 2-3 (`--join-clips 3`,
`lora.data.clip_joining`), and a joined clip's styled target is its parts' targets joined as they are. Tried
once and measured (plan.md item 1): targets written as the comma list most of these runs come out as made both
families' canary punctuation worse (numbers in sentences gained commas: "18, 13"), so the parts' join stays. This measures
what each base model writes for such runs itself: the same kind of runs (`with_joined_clips`, seed 42) of the
recipe's TRAINING speakers 9201-9203 (FSDD takes of `../shared/speech` and `../shared/speech-extra`; the
evaluation speakers 9205-9206 are never loaded), the first `--runs` of them, transcribed greedily by each base
model, and each output classified by how its words are separated:

    comma list     "Three, four, seven."   commas between the words
    stops          "Three. Four. Seven."   a full stop (or ? !) after more than the last word
    spaces         "one seven five"         words with neither
    other          one word, empty, or merged ("862.", "9-B-7")

    uv run python recipes/joined_style.py [--runs 60] [--models moonshine-base-en,whisper-tiny.en]

Writes recipes/results/joined_style.json and .md.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from lora.core.outputs import write_json_atomic, write_text_atomic  # noqa: E402 - after the path
from lora.data.clip_joining import with_joined_clips  # noqa: E402
from lora.data.records import read_librispeech_dir  # noqa: E402
from lora.longform import torch_transcriber  # noqa: E402
from lora.model_utils import load_base, resolve_model_id  # noqa: E402

TRAIN_SPEAKERS = {"9201", "9202", "9203"}  # the recipe's training speakers (9204 validates the sweep)
FOLDERS = (ROOT.parent / "shared" / "speech", ROOT.parent / "shared" / "speech-extra")
KINDS = ("comma list", "stops", "spaces", "other")


def kind(text: str) -> str:
    words = text.split()
    if len(words) < 2:
        return "other"
    if any(re.search(r"[.?!]$", w) for w in words[:-1]):
        return "stops"
    if any(w.endswith(",") for w in words[:-1]):
        return "comma list"
    return "spaces" if all(re.fullmatch(r"[\w']+[.?!]?", w) for w in words) else "other"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--models", default="moonshine-base-en,whisper-tiny.en")
    parser.add_argument("--output", default=str(ROOT / "recipes" / "results" / "joined_style.json"))
    args = parser.parse_args(argv)
    clips = [u for folder in FOLDERS for u in read_librispeech_dir(folder, ["fsdd"]) if u.speaker in TRAIN_SPEAKERS]
    runs = [u for u in with_joined_clips(clips, 3, seed=42) if "joined_from" in u.extra][: args.runs]
    result = {"runs": len(runs), "speakers": sorted(TRAIN_SPEAKERS), "models": {}}
    for name in args.models.split(","):
        model, processor, family = load_base(resolve_model_id(name))
        texts = torch_transcriber(model, processor, family)([u.samples() for u in runs])
        counts = Counter(kind(t) for t in texts)
        result["models"][name] = {"counts": {k: counts.get(k, 0) for k in KINDS},
                                  "examples": [{"reference": u.text, "output": t} for u, t in zip(runs, texts)]}
        print(name, dict(counts))
    write_json_atomic(args.output, result)
    lines = ["# How the base models write a run of spoken digits", "",
             f"{result['runs']} joined runs of 2-3 FSDD clips of the training speakers {', '.join(result['speakers'])} "
             "(`with_joined_clips`, seed 42), transcribed greedily by each base model (`recipes/joined_style.py`).", "",
             "| model | " + " | ".join(KINDS) + " |", "|---|" + "---|" * len(KINDS)]
    for name, r in result["models"].items():
        lines.append(f"| {name} | " + " | ".join(str(r["counts"][k]) for k in KINDS) + " |")
    write_text_atomic(Path(args.output).with_suffix(".md"), "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
