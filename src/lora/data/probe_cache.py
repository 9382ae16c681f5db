"""A cache of audio-file probes keyed by (real path, size, mtime), so a second run over the same
corpus starts at once. One SQLite file under `$LORA_HOME` (stdlib, safe across processes).

A file that changed (size or modification time) is probed again; entries of files that no longer
exist are never read back, so nothing needs invalidating by hand. Only file probes are cached:
inline arrays and encoded bytes have no identity to key on.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Iterable
from pathlib import Path

from lora.core.paths import lora_home
from lora.data.audio_probe import PROBER_VERSION, Probe

log = logging.getLogger("lora")

CACHE_FILE = "preflight_cache.sqlite"
TABLE = f"probes_v{PROBER_VERSION}"  # a new prober starts a new table: old answers are not read back
SCHEMA = f"""CREATE TABLE IF NOT EXISTS {TABLE} (
    path TEXT, size INTEGER, mtime_ns INTEGER, decoded INTEGER, min_s REAL, max_s REAL,
    seconds REAL, reason TEXT, detail TEXT, PRIMARY KEY (path, size, mtime_ns, decoded, min_s, max_s))"""


def file_key(path: str | Path) -> tuple[str, int, int] | None:
    """(real path, size, mtime_ns) of an existing regular file, else None (then it is not cached)."""
    try:
        real = os.path.realpath(path)
        st = os.stat(real)
    except OSError:
        return None
    return (real, st.st_size, st.st_mtime_ns) if os.path.isfile(real) else None


class ProbeCache:
    """`get`/`put` probe results of audio files. A cache that cannot be opened or written (a read-only
    `$LORA_HOME`, shared by several users) is said once and skipped: the files are probed, not cached."""

    def __init__(self, path: str | Path | None = None):
        default = os.environ.get("LORA_PREFLIGHT_CACHE") or lora_home() / CACHE_FILE  # env: benches start cold
        self.path = Path(path) if path is not None else Path(default)
        self.db = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, timeout=30)
            self.db.execute(SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            self._skip(exc)

    def _skip(self, exc: Exception) -> None:
        log.warning("warning: %s: cannot use the audio-probe cache (%s); probing without it", self.path, exc)
        self.close()

    def get_many(self, keys: Iterable[tuple], decoded: bool, min_s: float, max_s: float) -> dict[tuple, Probe]:
        found = {}
        if self.db is None:
            return found
        cur = self.db.cursor()
        for key in keys:
            row = cur.execute(f"SELECT seconds, reason, detail FROM {TABLE} WHERE path=? AND size=? AND mtime_ns=? AND "
                              "decoded>=? AND min_s=? AND max_s=?", (*key, int(decoded), min_s, max_s)).fetchone()
            if row is not None:
                found[key] = Probe(*row)
        return found

    def put_many(self, items: dict[tuple, Probe], decoded: bool, min_s: float, max_s: float) -> None:
        if self.db is None:
            return
        try:
            with self.db:
                self.db.executemany(f"INSERT OR REPLACE INTO {TABLE} VALUES (?,?,?,?,?,?,?,?,?)",
                                    [(*key, int(decoded), min_s, max_s, p.seconds, p.reason, p.detail) for key, p in items.items()])
        except sqlite3.Error as exc:  # a database readable but not writable
            self._skip(exc)

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None
