"""Shared CLI plumbing: logging set-up and the one-line error contract.

Deliberately imports nothing heavy so `--help` stays fast (torch is imported inside commands).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from collections.abc import Callable
from typing import NoReturn

from lora.core.errors import EXIT_USER_ERROR, Interrupted, UserError

log = logging.getLogger("lora")
EXIT_INTERRUPTED = 130  # what a shell reports for a command ended by Ctrl-C (128 + SIGINT)


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser under the one-line error contract: a bad option value is one stderr line and exit code 2
    (`error: lora train: argument --max-steps: invalid int value: 'abc'; see lora train --help`), where
    argparse prints the whole usage first (about 50 lines for `lora train`)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USER_ERROR, f"error: {self.prog}: {message}; see {self.prog} --help\n")


def setup_logging(quiet: bool = False, level: str = "INFO") -> None:
    logging.basicConfig(
        level=logging.WARNING if quiet else getattr(logging, level.upper(), logging.INFO),
        format="[lora] %(message)s",
        stream=sys.stderr,
        force=True,
    )
    if level.upper() != "DEBUG":
        # transformers' generate() repeats the same advisory warnings every batch; keep real errors.
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # read when transformers is imported
        # peft calls a transformers API that transformers 5 marks deprecated, on every get_peft_model.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


def expand_home(argv: list[str]) -> list[str]:
    """Each value that starts with `~` as the shell expands it, also where the shell does not: `--output=~/x`,
    a quoted "~/x" from a script. Some paths were expanded by the command and others not: `--output=~/o.json`
    was checked as the home folder's and then written into a folder named `~` in the current one."""
    expanded = []
    for arg in argv:
        flag, eq, value = arg.partition("=") if arg.startswith("--") else ("", "", arg)
        expanded.append(flag + eq + os.path.expanduser(value) if value.startswith("~") else arg)
    return expanded


def run_cli(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> int:
    """Run `main(argv)` (`~` expanded in its values); turn `UserError` into one stderr line and exit code 2."""
    try:
        code = main(expand_home(sys.argv[1:] if argv is None else list(argv)))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except Interrupted as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as exc:  # a path the command could not use (a file where a folder goes, no permission, disk full)
        if exc.filename is None:
            raise
        target = exc.filename if exc.filename2 is None else f"{exc.filename} -> {exc.filename2}"
        print(f"error: {target}: {exc.strerror or exc}; check that path (a folder where a folder is expected, "
              "permissions, free space)", file=sys.stderr)
        return EXIT_USER_ERROR
    return int(code or 0)
