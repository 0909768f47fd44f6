"""Is the Hugging Face hub reachable? Answered once per process, in a few seconds at most.

A newcomer without network access (or behind a firewall that drops packets) should not wait for
minutes of retries: textcl probes the hub's host with a short TCP connect and, when it fails, goes
straight to local copies. ``HF_HUB_OFFLINE=1`` skips the probe.
"""
from __future__ import annotations

import functools
import os
import socket
import threading
from urllib.parse import urlparse

PROBE_TIMEOUT_S = 3.0


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def offline_requested() -> bool:
    return _truthy(os.environ.get("HF_HUB_OFFLINE")) or _truthy(os.environ.get("TRANSFORMERS_OFFLINE"))


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout: float = PROBE_TIMEOUT_S) -> bool:
    """True when a TCP connection to the hub's host opens within ``timeout`` seconds."""
    if offline_requested():
        return False
    url = urlparse(hub_endpoint())
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    result: list[bool] = []

    def probe() -> None:  # DNS lookups have no timeout of their own, hence the thread
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])
