"""Does a transcript depend on the batch it is decoded in? Moonshine base, real weights, batch sizes 1, 8 and 32.

    uv run python benchmarks/batch_invariance.py

Two sets of real clips: the digits recipe's training speakers (every 4th FSDD take of 9201-9204) with the
dev-clean sentences, 57 clips; and the first 64 takes of the held-out digit speakers 9205-9206 (a measurement,
nothing is chosen on it). Each decoded greedily (`lora.decoding.transcribe_examples`, length-grouped batches) by
the model as `lora` loads it (`load_base`: each clip of a padded batch encoded as if alone,
`lora.families.moonshine.clip_lengths`) and by the same weights as transformers loads them (`plain`: the
encoder's GroupNorm and mask see the batch's padding). Per set and model: WER at each batch size, and how many
transcripts are not the same at all three. Writes benchmarks/results/batch_invariance.json (atomically).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "batch_invariance.json"
BATCH_SIZES = (1, 8, 32)
TRAIN_SPEAKERS, HELD_OUT_SPEAKERS = ("9201", "9202", "9203", "9204"), ("9205", "9206")  # lora.runners.digits


def clip_sets(speech: Path) -> dict[str, list]:
    from lora.data.records import read_librispeech_dir

    fsdd = read_librispeech_dir(speech, ["fsdd"])
    train = [u for u in fsdd if u.speaker in TRAIN_SPEAKERS][::4] + list(read_librispeech_dir(speech, ["dev-clean"]))
    held_out = [u for u in fsdd if u.speaker in HELD_OUT_SPEAKERS][:64]
    return {"training speakers (FSDD 9201-9204 every 4th take + dev-clean)": train,
            "held-out digit speakers (FSDD 9205-9206, first 64 takes)": held_out}


def main() -> None:
    import torch
    from transformers import AutoModelForSpeechSeq2Seq

    from lora.core.outputs import library_versions, write_json_atomic
    from lora.core.paths import default_speech_dir
    from lora.data_loader import prepare_dataset
    from lora.decoding import transcribe_examples
    from lora.evaluation import score
    from lora.model_utils import load_base, resolve_model_id

    speech = default_speech_dir()
    if speech is None:
        sys.exit("error: no speech folder (../shared/speech or $LORA_SPEECH_DIR)")
    resolved = resolve_model_id("moonshine-base-en")
    ours, processor, family = load_base(resolved)
    plain = AutoModelForSpeechSeq2Seq.from_pretrained(resolved.path, dtype=torch.float32).eval()  # as transformers has it
    out = {"model": resolved.model_id_used, "batch_sizes": list(BATCH_SIZES), "versions": library_versions(), "sets": {}}
    for name, rows in clip_sets(speech).items():
        examples = prepare_dataset(rows, processor, family, None)
        ids, refs = [e.id for e in examples], [e.text for e in examples]
        entry = {"clips": len(examples), "clips_under_1s": sum(e.seconds < 1 for e in examples)}
        for label, model in (("lora", ours), ("plain", plain)):
            hyps = {bs: transcribe_examples(model, processor, family, examples, bs, progress=False) for bs in BATCH_SIZES}
            differ = [i for i in range(len(examples)) if len({hyps[bs][i] for bs in BATCH_SIZES}) > 1]
            entry[label] = {"wer": {str(bs): score(ids, refs, hyps[bs])["wer"] for bs in BATCH_SIZES},
                            "transcripts_differing": len(differ),
                            "examples": [{"id": ids[i], **{str(bs): hyps[bs][i] for bs in BATCH_SIZES}} for i in differ[:5]]}
            print(name, label, {bs: round(100 * w, 1) for bs, w in entry[label]["wer"].items()},
                  f"{len(differ)} of {len(examples)} differ", flush=True)
        out["sets"][name] = entry
    write_json_atomic(RESULTS, out)
    print(f"-> {RESULTS}")


if __name__ == "__main__":
    main()
