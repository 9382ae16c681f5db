"""`lora-check` as a user runs it: a subprocess, its exit code, stdout table and one-line stderr."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from messy_audio import write_audio, write_jsonl

LORA_CHECK = Path(sys.executable).with_name("lora-check")


def run_check(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LORA_CHECK), *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_bad_manifest_exits_2_with_one_line(tmp_path):
    manifest = write_jsonl(tmp_path / "m.jsonl", [{"audio": "gone.wav", "text": "a"}, {"audio": "x.txt", "text": ""}])
    (tmp_path / "x.txt").write_text("not audio")
    done = run_check(manifest, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith(f"error: {manifest}: only 0 usable row(s) of 2")
    assert "Traceback" not in done.stderr + done.stdout
    assert "missing file" in done.stdout and "empty text" in done.stdout  # the table still printed
    records = [json.loads(line) for line in (tmp_path / "quarantine.jsonl").read_text().splitlines()]
    assert [(r["origin"], r["reason"]) for r in records] == [(f"{manifest}:1", "missing file"), (f"{manifest}:2", "empty text")]


def test_unreadable_manifest_exits_2_with_file_and_line(tmp_path):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"audio": "a.wav"}\n{"audio": \n')
    done = run_check(manifest, "--quiet", cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    expected = f"error: {manifest}:2: invalid JSON at column 11 (Expecting value); fix or delete that line"
    assert done.stderr.splitlines() == [expected]
    assert not (tmp_path / "quarantine.jsonl").exists()


def test_some_bad_rows_still_pass_and_explicit_quarantine(tmp_path):
    write_audio(tmp_path / "a.wav")
    manifest = write_jsonl(tmp_path / "m.jsonl", [{"audio": "a.wav", "text": "x"}, {"audio": "a.wav", "text": "y"}])
    done = run_check(manifest, "--quarantine", tmp_path / "out" / "q.jsonl", cwd=tmp_path)
    assert done.returncode == 0 and done.stderr == ""
    assert "2 read, 1 good, 1 bad" in done.stdout and "duplicate id" in done.stdout
    assert (tmp_path / "out" / "q.jsonl").is_file() and not (tmp_path / "quarantine.jsonl").exists()
    assert run_check(manifest, "--min-good", 2, cwd=tmp_path).returncode == 2


def test_a_clean_check_removes_an_earlier_checks_list_and_another_file_of_that_name_is_kept(tmp_path):
    write_audio(tmp_path / "a.wav")
    write_audio(tmp_path / "b.wav", seconds=1.5)
    manifest = write_jsonl(tmp_path / "m.jsonl", [{"audio": "a.wav", "text": "x"}, {"audio": "gone.wav", "text": "y"}])
    assert run_check(manifest, cwd=tmp_path).returncode == 0
    assert "missing file" in (tmp_path / "quarantine.jsonl").read_text()
    write_jsonl(manifest, [{"audio": "a.wav", "text": "x"}, {"audio": "b.wav", "text": "yz"}])  # the row fixed
    done = run_check(manifest, cwd=tmp_path)
    assert done.returncode == 0 and f"removed {tmp_path / 'quarantine.jsonl'}: an earlier check's quarantine" in done.stdout
    assert not (tmp_path / "quarantine.jsonl").exists()
    (tmp_path / "quarantine.jsonl").write_text("my notes on the rows\n")  # not a list a check wrote: never replaced
    write_jsonl(manifest, [{"audio": "a.wav", "text": "x"}, {"audio": "gone.wav", "text": "y"}])
    done = run_check(manifest, cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [f"error: {tmp_path / 'quarantine.jsonl'}: exists and is not a quarantine list, so it "
                                        "is kept; pass --quarantine PATH (or --output DIR) for the list of bad rows"]
    assert (tmp_path / "quarantine.jsonl").read_text() == "my notes on the rows\n"


def test_lora_segments_quarantine_beside_its_manifest_is_kept(tmp_path):
    """`lora segment` writes its quarantined clips to quarantine.jsonl beside the manifest it writes; checking that
    manifest next deleted them as "an earlier check's quarantine" (clean check) or wrote over them (bad rows)."""
    write_audio(tmp_path / "a.wav")
    manifest = write_jsonl(tmp_path / "all.jsonl", [{"audio": "a.wav", "text": "x"}])
    segments = json.dumps({"origin": f"{tmp_path / 'talk.flac'}@0.20-15.16s", "reason": "cer 0.038 > max_cer 0.02",
                           "start_s": 0.2, "end_s": 15.16, "text": "words", "hypothesis": "word", "cer": 0.038}) + "\n"
    (tmp_path / "quarantine.jsonl").write_text(segments)
    done = run_check(manifest, cwd=tmp_path)
    assert done.returncode == 0 and "removed" not in done.stdout
    assert (tmp_path / "quarantine.jsonl").read_text() == segments
    write_jsonl(manifest, [{"audio": "a.wav", "text": "x"}, {"audio": "gone.wav", "text": "y"}])
    done = run_check(manifest, cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "bad" in done.stdout
    assert "another command's quarantine list (lora segment's clips), so it is kept" in done.stderr
    assert (tmp_path / "quarantine.jsonl").read_text() == segments


def test_a_dataset_is_checked_as_train_reads_it(speech_dir, tmp_path):
    """`lora check --dataset`: a Parquet file of real clips (one path missing) as `lora train --dataset` reads it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    flacs = sorted((speech_dir / "test-clean").rglob("*.flac"))[:3]
    table = pa.table({"audio": [str(f) for f in flacs] + [str(tmp_path / "gone.flac")], "text": ["a b c"] * 4,
                      "speaker_id": [f.name.split("-")[0] for f in flacs] + ["x"]})
    pq.write_table(table, tmp_path / "d.parquet")
    done = run_check("--dataset", tmp_path / "d.parquet", "--no-hygiene", "--quiet", cwd=tmp_path)
    assert done.returncode == 0 and "4 read, 3 good, 1 bad" in done.stdout and "missing file" in done.stdout
    assert (tmp_path / "quarantine.jsonl").is_file()  # beside the dataset file, as for a manifest
    for both_or_neither in (["--dataset", tmp_path / "d.parquet", tmp_path / "d.parquet"], []):
        done = run_check(*both_or_neither, cwd=tmp_path)
        assert done.returncode == 2 and done.stderr.startswith("error: check one source: a MANIFEST_OR_DIR, or --dataset")


def test_shared_speech_is_clean(speech_dir, tmp_path):
    done = run_check(speech_dir, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "326 read, 326 good, 0 bad" in done.stdout and "282.7 s" in done.stdout
    assert not (tmp_path / "quarantine.jsonl").exists()  # nothing bad, nothing written


def test_help_does_not_import_torch(tmp_path):
    code = ("import sys; from lora.scripts import check\n"
            "try:\n    check.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "import lora.data.manifest, lora.data.preflight, lora.data.audio_probe\n"
            "print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "MANIFEST_OR_DIR" in done.stdout
    assert done.stdout.strip().splitlines()[-1] == "False"
