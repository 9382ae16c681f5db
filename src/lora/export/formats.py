"""Export formats by name, gathered from the family packages (each family declares its own)."""

from __future__ import annotations

from lora.core.errors import UserError
from lora.families import ExportFormat, all_exports


def export_format(name: str, family: str | None = None) -> ExportFormat:
    """The format called `name`, checked against the adapter's family when it is known."""
    formats = all_exports()
    fmt = formats.get(name)
    if fmt is None:
        choices = ", ".join(f"{f.name} ({f.family})" for f in formats.values())
        raise UserError(f"unknown --format {name!r}; choose one of: {choices}")
    if family is not None and family != fmt.family:
        fits = [f.name for f in formats.values() if f.family == family]
        hint = f"use --format {fits[0]}" if fits else "no export format exists for it yet"
        raise UserError(f"--format {name} exports {fmt.family} models, but this adapter is for a {family} model; {hint}")
    return fmt
