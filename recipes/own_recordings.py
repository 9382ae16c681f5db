"""A user's own recordings, end to end: the README's "Your own recordings" commands, measured.

Builds a folder the way a user would hand one over, from the real speech of `../shared/speech` (never
synthetic audio): the 11 LJSpeech utterances joined into two long recordings of one narrator (the first
with a `.txt` transcript, the second re-encoded as M4A and timed by an `.srt` of its utterance bounds), and
each LibriSpeech dev-clean chapter joined into one recording of its reader, with a `.txt` transcript.
Then runs, as a user would, each timed from the start of its process:

    lora check FOLDER
    lora segment --manifest FOLDER --output OUT/clips/all.jsonl --max-chunk-s 15
    lora train --manifest OUT/clips/all.jsonl --max-steps 3 --output-dir OUT/run
    lora stt OUT/talks/narrator/part2.m4a --adapter-dir OUT/run/lora_adapter --output OUT/stt.json

and two subtitle checks on the 122 s `lora join` of LJSpeech: an SRT of its utterance bounds in which one
cue's words are replaced, cut by `lora segment --transcript @talk.srt`; and automatic captions as YouTube
writes them (rolling: each line in the file two or three times) of its utterance bounds timed 3 s late, cut as
timed and with `--subtitle-offset auto`, and timed for 25 fps of a 24 fps video, with `--subtitle-offset auto`.
And a meeting: two dev-clean readers taking turns in one recording, its transcript naming them as Teams does;
and the 122 s talk as an MKV video whose subtitles are a stream inside it, in a folder given to `lora segment`.

    uv run python recipes/own_recordings.py --output-root /tmp/own

Needs ffmpeg (for the M4A). Writes recipes/results/own_recordings.json. WER figures of so few utterances
say little; this records that each step works on such a folder and what it costs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from lora.core.audio import SAMPLE_RATE, audio_seconds  # noqa: E402
from lora.core.outputs import write_text_atomic  # noqa: E402
from lora.data.long_recordings import chapter_groups, join_utterances  # noqa: E402
from lora.data.records import read_librispeech_dir  # noqa: E402
from lora.longform import Segment, to_srt, to_vtt  # noqa: E402

sys.path.insert(0, str(ROOT / "recipes"))
from caption_files import rolling_vtt  # noqa: E402

RESULT = ROOT / "recipes" / "results" / "own_recordings.json"


def build_folder(speech_dir: Path, folder: Path) -> dict:
    groups = chapter_groups(read_librispeech_dir(speech_dir, ["ljspeech", "dev-clean"]))
    narrator = groups.pop("9001-1")
    part1, part2 = join_utterances("part1", narrator[:5]), join_utterances("part2", narrator[5:])
    (folder / "narrator").mkdir(parents=True)
    sf.write(str(folder / "narrator" / "part1.flac"), part1.samples, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    (folder / "narrator" / "part1.txt").write_text(part1.text.capitalize() + "\n", encoding="utf-8")
    flac = folder / "narrator" / "part2.flac"
    sf.write(str(flac), part2.samples, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(flac), "-c:a", "aac",
                    str(folder / "narrator" / "part2.m4a")], check=True)
    flac.unlink()
    (folder / "narrator" / "part2.srt").write_text(
        to_srt([Segment(a, b, u.text.capitalize()) for u, (a, b) in zip(part2.utterances, part2.bounds)]), encoding="utf-8")
    for chapter, utterances in sorted(groups.items()):
        joined = join_utterances(chapter, utterances)
        reader = folder / f"reader{chapter.split('-')[0]}"
        reader.mkdir()
        sf.write(str(reader / f"{chapter}.flac"), joined.samples, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
        (reader / f"{chapter}.txt").write_text(joined.text + "\n", encoding="utf-8")
    return {str(p.relative_to(folder)): round(audio_seconds(p), 2)
            for p in sorted(folder.rglob("*")) if p.suffix in (".flac", ".m4a")}


def timed(command: list[str], may_fail: bool = False) -> dict:
    """The command's wall time from the start of its process and its output; a failure ends the recipe unless
    `may_fail` (then its exit code, warnings and error line are the result)."""
    started = time.perf_counter()
    done = subprocess.run(["uv", "run", "--no-sync", *command], capture_output=True, text=True, cwd=ROOT)
    summary = [line for line in done.stdout.splitlines() if line.strip()]
    if done.returncode != 0 and not may_fail:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
    result = {"command": "lora " + " ".join(command[1:]), "seconds": round(time.perf_counter() - started, 1),
              "stdout": summary}
    if may_fail:
        result["exit_code"] = done.returncode
        result["stderr"] = [line for line in done.stderr.splitlines() if "warning" in line or "error" in line
                            or line.startswith("[lora] " + command[command.index("--transcript") + 1][1:])]
    return result


def rolling_captions_late(out: Path, bounds: list[dict], late_s: float, scale: float) -> dict:
    """The talk with automatic captions (rolling, each line two or three times) timed `late_s` late, as
    captions of a video with an intro the audio lacks: cut as timed, then with --subtitle-offset auto; and
    the same captions timed at another frame rate (every time x `scale`), with --subtitle-offset auto."""
    vtt, drifted = out / "talk.en.vtt", out / "talk.drifted.vtt"
    vtt.write_text(rolling_vtt([(b["start_s"] + late_s, b["end_s"] + late_s, b["text"]) for b in bounds]), encoding="utf-8")
    drifted.write_text(rolling_vtt([(b["start_s"] * scale, b["end_s"] * scale, b["text"]) for b in bounds]), encoding="utf-8")
    runs = {}
    for name, extra, captions in (("as_timed", [], vtt), ("auto", ["--subtitle-offset", "auto"], vtt),
                                  ("frame_rate_auto", ["--subtitle-offset", "auto"], drifted)):
        manifest = out / f"captions_{name}" / "talk.jsonl"
        runs[name] = timed(["lora", "segment", "--audio", str(out / "talk.flac"), "--transcript", f"@{captions}",
                            "--output", str(manifest), *extra], may_fail=True)
        kept = [json.loads(line) for line in manifest.read_text().splitlines()] if manifest.is_file() else []
        runs[name]["kept_words"] = sum(len(r["text"].split()) for r in kept)
    said = sum(len(b["text"].split()) for b in bounds)
    vtt_words = sum(len(line.split()) for line in vtt.read_text().splitlines()[4:] if line.strip() and "-->" not in line)
    return {"late_s": late_s, "frame_rate_scale": scale, "words_said": said, "words_in_the_vtt": vtt_words, **runs}


def meeting(out: Path, speech_dir: Path) -> dict:
    """Two readers taking turns in one recording (dev-clean 1988 and 3752, utterances alternating) with a
    transcript as Teams writes one (`<v Name>` voice tags), cut by `lora segment`: who speaks each clip."""
    chapters = chapter_groups(read_librispeech_dir(speech_dir, ["dev-clean"]))
    turns = [u for pair in zip(chapters["1988-24833"], chapters["3752-4944"]) for u in pair]
    parts = [u.samples() for u in turns]
    ends = np.cumsum([len(x) for x in parts]) / SAMPLE_RATE
    names = {"1988": "Ann Reader", "3752": "Ben Reader"}
    sf.write(str(out / "meeting.flac"), np.concatenate(parts), SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    (out / "meeting.vtt").write_text(to_vtt([Segment(a, b, f"<v {names[u.speaker]}>{u.text.capitalize()}</v>")
                                             for u, a, b in zip(turns, [0.0, *ends[:-1]], ends)]), encoding="utf-8")
    manifest = out / "meeting_clips" / "meeting.jsonl"
    run = timed(["lora", "segment", "--audio", str(out / "meeting.flac"), "--transcript", f"@{out / 'meeting.vtt'}",
                 "--output", str(manifest), "--speaker", "weekly-call"])
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    return {"turns": [names[u.speaker] for u in turns], "segment": run,
            "clip_speakers": [r["speaker"] for r in rows],
            "clips_matching_their_turn": sum(r["speaker"] == names[u.speaker] for r, u in zip(rows, turns))}


def video_with_subtitles(out: Path, bounds: list[dict]) -> dict:
    """The talk as a video (a test pattern with its real speech) whose subtitles are a stream inside the MKV,
    in a folder, cut by `lora segment --manifest FOLDER`."""
    folder = out / "videos"
    folder.mkdir()
    srt = out / "talk_right.srt"
    srt.write_text(to_srt([Segment(b["start_s"], b["end_s"], b["text"].capitalize()) for b in bounds]), encoding="utf-8")
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=5",
                    "-i", str(out / "talk.flac"), "-i", str(srt), "-map", "0:v", "-map", "1:a", "-map", "2",
                    "-c:v", "libx264", "-c:a", "aac", "-c:s", "srt", "-metadata:s:s:0", "language=eng",
                    "-t", f"{audio_seconds(out / 'talk.flac'):.3f}", str(folder / "lecture.mkv")], check=True)
    manifest = out / "video_clips" / "all.jsonl"
    run = timed(["lora", "segment", "--manifest", str(folder), "--output", str(manifest)])
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    return {"video": "lecture.mkv (H.264 test pattern, AAC speech, SubRip stream)", "segment": run,
            "kept_words": sum(len(r["text"].split()) for r in rows), "words_said": sum(len(b["text"].split()) for b in bounds)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-root", required=True, help="scratch folder (replaced)")
    parser.add_argument("--speech-dir", default=str(ROOT.parent / "shared" / "speech"))
    args = parser.parse_args()
    out = Path(args.output_root)
    shutil.rmtree(out, ignore_errors=True)
    folder = out / "talks"
    recordings = build_folder(Path(args.speech_dir), folder)
    steps = {
        "check": timed(["lora", "check", str(folder), "--quarantine", str(out / "check_quarantine.jsonl")]),
        "segment": timed(["lora", "segment", "--manifest", str(folder), "--output", str(out / "clips" / "all.jsonl"),
                          "--max-chunk-s", "15"]),
        "train": timed(["lora", "train", "--manifest", str(out / "clips" / "all.jsonl"), "--max-steps", "3",
                        "--output-dir", str(out / "run"), "--quiet"]),
        "stt": timed(["lora", "stt", str(folder / "narrator" / "part2.m4a"), "--adapter-dir", str(out / "run" / "lora_adapter"),
                      "--output", str(out / "stt.json"), "--quiet"]),
    }
    joined = timed(["lora", "join", "--subset", "ljspeech", "--seconds", "120", "--output", str(out / "talk.flac"),
                    "--transcript-out", str(out / "talk.txt"), "--data-dir", args.speech_dir])
    bounds = json.loads((out / "talk.flac.bounds.json").read_text())
    cues = [(b["start_s"], b["end_s"], b["text"].capitalize()) for b in bounds]
    cues[5] = (cues[5][0], cues[5][1], "This cue holds the wrong words entirely for the test of quarantine")
    (out / "talk.srt").write_text(to_srt([Segment(*c) for c in cues]), encoding="utf-8")
    subtitles = timed(["lora", "segment", "--audio", str(out / "talk.flac"), "--transcript", f"@{out / 'talk.srt'}",
                       "--output", str(out / "talk_clips" / "talk.jsonl")])
    captions = rolling_captions_late(out, bounds, late_s=3.0, scale=25 / 24)
    turns = meeting(out, Path(args.speech_dir))
    video = video_with_subtitles(out, bounds)
    metrics = json.loads((out / "run" / "real_metrics.json").read_text())
    result = {
        "recordings": recordings, "steps": steps,
        "train": {"train_rows": len(metrics["train_ids"]), "eval_rows": len(metrics["eval_ids"]),
                  "train_speakers": metrics["train_speakers"], "eval_speakers": metrics["eval_speakers"],
                  "baseline_wer": metrics["baseline_wer"], "tuned_wer": metrics["tuned_wer"]},
        "stt_hypothesis": json.loads((out / "stt.json").read_text())["samples"][0]["hypothesis"],
        "subtitles": {"join": joined, "wrong_cue": {"start_s": cues[5][0], "end_s": cues[5][1]}, "segment": subtitles},
        "automatic_captions_late": captions,
        "meeting": turns,
        "video_with_subtitles": video,
    }
    write_text_atomic(RESULT, json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
