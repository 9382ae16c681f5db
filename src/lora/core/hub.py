"""Is the Hugging Face hub reachable from here? One fast probe every command can ask first.

The hub client itself retries for ~25 s before failing; a run that would only find out then wastes
that time, and a command that needs the hub should say so in one line instead.
"""

from __future__ import annotations

import os
import socket
from functools import lru_cache
from urllib.parse import urlparse


@lru_cache(maxsize=1)
def hub_reachable(timeout: float = 3.0) -> bool:
    """One fast TCP probe of the hub endpoint (the hub client itself retries for ~25 s)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes"}:
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False
