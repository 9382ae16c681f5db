"""The scripts of recipes/ as modules for the tests (recipes/ is a folder of scripts, not a package)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def load_recipe(name: str):
    """recipes/<name>.py, imported (its `main` not run)."""
    spec = importlib.util.spec_from_file_location(name, RECIPES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
