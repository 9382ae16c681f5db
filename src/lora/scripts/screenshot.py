"""`python -m lora.scripts.screenshot REPORT_HTML [PNG] [--height PX]`

Renders a report page in headless Chromium and saves a screenshot: a check that report.html
actually renders (a browser, not a parser), used by tests/test_report.py when Chromium is installed.

The flags keep Chromium off the network and out of the user's profile (fresh --user-data-dir,
no sync/updates/first-run), and --no-sandbox lets it run as root inside containers and CI.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from lora.core.cli import ArgumentParser

CHROMIUM = Path("/usr/bin/chromium")
WINDOW = (1200, 1600)
TIMEOUT_S = 120
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars")


def chromium_path() -> Path | None:
    """/usr/bin/chromium when present (Debian's package), else whatever `chromium` is on PATH, else None."""
    if CHROMIUM.is_file():
        return CHROMIUM
    found = shutil.which("chromium")
    return Path(found) if found else None


def chromium_command(chromium: Path, html: Path, png: Path, profile: Path, window: tuple[int, int] = WINDOW) -> list[str]:
    """The exact command line (pure, so tests and humans can read it)."""
    return [str(chromium), *FLAGS, f"--user-data-dir={profile}", f"--screenshot={png}",
            f"--window-size={window[0]},{window[1]}", html.resolve().as_uri()]


def screenshot(html: Path, png: Path, window: tuple[int, int] = WINDOW, timeout: float = TIMEOUT_S) -> Path:
    """Screenshot `html` into `png`; raises RuntimeError with Chromium's stderr if nothing was written."""
    chromium = chromium_path()
    if chromium is None:
        raise RuntimeError("chromium not found (apt-get install -y chromium)")
    png = Path(png).resolve()
    png.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="lora-chromium-") as profile:
        done = subprocess.run(chromium_command(chromium, Path(html), png, Path(profile), window),
                              check=False, capture_output=True, text=True, timeout=timeout)
    if not png.is_file() or png.stat().st_size == 0:
        raise RuntimeError(f"chromium wrote no screenshot (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
    return png


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="screenshot", description=__doc__.split("\n\n")[1])
    parser.add_argument("html", type=Path, metavar="REPORT_HTML")
    parser.add_argument("png", type=Path, nargs="?", default=None, help="default: REPORT_HTML with .png")
    parser.add_argument("--height", type=int, default=WINDOW[1], help="window height in pixels (the shot's height)")
    args = parser.parse_args(argv)
    try:
        print(screenshot(args.html, args.png or args.html.with_suffix(".png"), (WINDOW[0], args.height)))
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
