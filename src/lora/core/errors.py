"""User-facing errors: one clear line and exit code 2, never a traceback.

Anything raised as `UserError` is caught by the CLI wrapper (`lora.core.cli.run_cli`) and printed
as `error: <message>`; the message should say which file/line, what is wrong and what to do.
"""

from __future__ import annotations

EXIT_USER_ERROR = 2


class UserError(Exception):
    """Bad input or an unreachable resource the user can fix; printed as one line, exit 2."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM with what was kept and how to go on: printed as one line, exit 128 + the signal's
    number as a shell reports it (130 for Ctrl-C, 143 for SIGTERM)."""

    def __init__(self, message: str, signum: int = 2):
        super().__init__(message)
        self.signum = signum
