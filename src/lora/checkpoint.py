"""Checkpoints a killed run can resume from, bit-for-bit: adapter, optimizer, scheduler, RNG
states and the data position, written atomically (temp dir + rename) every N steps.

Formats: adapter weights and torch RNG states in safetensors; optimizer/scheduler state with
`torch.save` and read back with `torch.load(weights_only=True)` (our own state only); the rest JSON.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import random
import shutil
from pathlib import Path

import numpy as np

from lora.core.errors import UserError
from lora.core.outputs import replace_dir, writing

CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "state.json"
# Config fields that must match for a resume to continue the same run.
RESUME_KEYS = ("model_id", "seed", "batch_size", "max_batch_seconds", "gradient_accumulation_steps", "learning_rate", "lora_r",
               "lora_alpha", "lora_dropout", "target_modules", "dataset_samples", "train_split", "data_dir", "manifest",
               "dataset", "dataset_split", "lr_scheduler_type", "warmup_steps")
PATH_KEYS = ("model_id", "data_dir", "manifest", "dataset")  # compared as the paths they name


def _rng_state() -> tuple[dict, dict]:
    import torch

    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda{i}"] = state
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    host = {"python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
            "numpy": [kind, keys.tolist(), pos, has_gauss, cached]}
    return tensors, host


def _set_rng_state(tensors: dict, host: dict) -> None:
    import torch

    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("cuda")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    version, internal, gauss = host["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = host["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


def save_checkpoint(out_dir: Path, model, optimizer, scheduler, state: dict) -> Path:
    """Write `out_dir/checkpoint/` atomically; `model` is the unwrapped PEFT model."""
    import torch
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    final = Path(out_dir) / CHECKPOINT_DIR
    tmp = final.with_name(f".{CHECKPOINT_DIR}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:  # a full disk: one line naming the checkpoint, the earlier checkpoint whole, no half-written folder left
        with writing(final):
            tmp.mkdir(parents=True)
            weights = {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(model).items()}
            save_file(weights, str(tmp / "adapter.safetensors"))
            buffer = io.BytesIO()  # torch.save's own file writer reports a full disk as a bare RuntimeError
            torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, buffer)
            (tmp / "optimizer.pt").write_bytes(buffer.getvalue())
            tensors, host = _rng_state()
            save_file(tensors, str(tmp / "rng.safetensors"))
            (tmp / STATE_FILE).write_text(json.dumps(state | {"rng": host}) + "\n")
        replace_dir(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


# what `training.train` writes into state.json and reads back on --resume, by JSON kind
STATE_KINDS = {"step": int, "history": list, "audio_seconds": int | float, "label_tokens": int}


def read_state(out_dir: Path) -> dict | None:
    path = Path(out_dir) / CHECKPOINT_DIR / STATE_FILE
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError:
        raise UserError(f"{path}: checkpoint state is unreadable; delete {path.parent} to start over") from None
    if not isinstance(state, dict) or not isinstance(state.get("config", {}), dict):
        raise UserError(f"{path}: not a checkpoint's state (a JSON object with the run's config); delete {path.parent} "
                        "to start over")
    return state


def interrupted_at(out_dir: Path, checkpoint_every: int, signal_name: str = "SIGINT") -> str:
    """What a run stopped by Ctrl-C (SIGINT) or SIGTERM kept, and how to go on from it."""
    how = "interrupted" if signal_name == "SIGINT" else f"stopped by {signal_name}"
    state = None
    try:
        state = read_state(out_dir)
    except UserError:
        pass
    if state is None:
        every = f"every {checkpoint_every} steps" if checkpoint_every else "never (--checkpoint-every 0)"
        return f"{how} before the first checkpoint (written {every}); nothing to resume in {out_dir}"
    return (f"{how}; the checkpoint of step {state.get('step')} is in {Path(out_dir) / CHECKPOINT_DIR}: "
            "run the same command with --resume to go on from it")


def _absolute(value):
    """A path option as the absolute path it names here, else as given (an import name, a hub id)."""
    if isinstance(value, str) and value and Path(value).expanduser().exists():
        return str(Path(value).expanduser().resolve())
    return value


def resume_config(config: dict) -> dict:
    """The run's options as a checkpoint keeps them: paths absolute, so a resume from another folder (or
    spelling the same file another way) continues the run."""
    return {k: _absolute(v) if k in PATH_KEYS else v for k, v in config.items()}


def check_resumable(state: dict, config: dict, rows: dict | None = None) -> None:
    saved, here = state.get("config", {}), resume_config(config)
    # a key the checkpoint lacks is an option added since it was written: nothing to compare; a path is the
    # same as given (a checkpoint written before paths were kept absolute) or as the path it names
    changed = [k for k in RESUME_KEYS if k in saved and saved[k] != config.get(k) and saved[k] != here.get(k)]
    if changed:
        raise UserError(f"cannot resume: option(s) {', '.join(changed)} differ from the checkpointed run; "
                        "use the same options or a new --output-dir")
    step, max_steps = state.get("step"), config.get("max_steps")
    if isinstance(step, int) and isinstance(max_steps, int) and step > max_steps > 0:
        raise UserError(f"cannot resume: the checkpoint is of step {step}, past --max-steps {max_steps}; ask for "
                        f"--max-steps {step} or more, or start a new run (a new --output-dir, or without --resume)")
    before = state.get("rows")
    if rows is not None and before is not None and before != rows:
        raise UserError(f"cannot resume: the training rows differ from the checkpointed run's ({before.get('count')} "
                        f"rows then, {rows['count']} now: the data changed since); restore the data it trained on, "
                        "or start a new run (a new --output-dir, or without --resume)")


def finished_length(state: dict, config: dict) -> str | None:
    """Why a finished run's checkpoint is not this run's whole length (None: it is: nothing left to train).

    A run that ends writes a last checkpoint marked `finished`; `--resume` with the same options is then done
    already, and with a longer --max-steps / --num-epochs goes on from it."""
    saved = state.get("config", {})
    if config.get("num_epochs", 0) > 0 or saved.get("num_epochs", 0) > 0:
        if saved.get("num_epochs") != config.get("num_epochs"):
            return f"--num-epochs {config.get('num_epochs')} (it ran {saved.get('num_epochs')})"
        return None
    if saved.get("max_steps") != config.get("max_steps"):
        return f"--max-steps {config.get('max_steps')} (it ran {saved.get('max_steps')})"
    return None


def load_checkpoint(out_dir: Path, model, optimizer, scheduler) -> dict:
    """Restore adapter, optimizer, scheduler and RNG states; returns the saved `state.json`."""
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    folder = Path(out_dir) / CHECKPOINT_DIR
    state = read_state(out_dir)
    # every file read before any state is set: a damaged one leaves the run as it was
    adapter = _read_part(folder / "adapter.safetensors", lambda p: load_file(str(p)))
    saved = _read_part(folder / "optimizer.pt", lambda p: torch.load(p, weights_only=True))
    rng = _read_part(folder / "rng.safetensors", lambda p: load_file(str(p)))
    wrong = [f"{key} ({'missing' if key not in state else type(state[key]).__name__})" for key, kind in STATE_KINDS.items()
             if key not in state or isinstance(state[key], bool) or not isinstance(state[key], kind)]
    if wrong:
        raise UserError(f"{folder / STATE_FILE}: checkpoint state with {', '.join(wrong)} where the run wrote a number "
                        f"or a list; delete {folder} to start over")
    host = state.pop("rng", None)
    if not isinstance(host, dict) or not {"python", "numpy"} <= set(host):
        raise UserError(f"{folder / STATE_FILE}: no random-number states in it (rng); delete {folder} to start over")
    set_peft_model_state_dict(model, adapter)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    _set_rng_state(rng, host)
    return state


def _read_part(path: Path, read):
    """One checkpoint file, or one line naming it. Checkpoints are written atomically, so only damage from outside
    (a partial copy, a full disk elsewhere, a deleted file) gets here."""
    try:
        return read(path)
    except Exception as exc:  # torch's zip reader, safetensors and the OS each raise their own class for a bad file
        reason = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
        raise UserError(f"{path}: checkpoint file is unreadable ({reason}); delete {path.parent} to start over, "
                        "or put the file back") from None


class OutputLock:
    """An exclusive lock on an output folder so two runs cannot write into it at once.

    A POSIX record lock (`lockf`), not `flock`: it belongs to this process only. An `flock` is shared
    with every forked child (the data loader's workers), so a run killed with SIGKILL left its lock held
    by orphaned workers until they noticed, and the `--resume` right after was refused.
    """

    def __init__(self, out_dir: Path):
        self.path = Path(out_dir) / ".lock"
        self.handle = None

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(self.path, "a")  # not "w": a run refused the lock must not blank the holder's pid
        try:
            fcntl.lockf(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except (BlockingIOError, PermissionError):
            self.handle.close()
            raise UserError(f"{self.path.parent}: another run is writing to this folder; wait for it or pick another --output-dir") from None
        self.handle.truncate(0)
        self.handle.write(f"{os.getpid()}\n")
        self.handle.flush()
        return self

    def __exit__(self, *exc):
        fcntl.lockf(self.handle, fcntl.LOCK_UN)
        self.handle.close()
