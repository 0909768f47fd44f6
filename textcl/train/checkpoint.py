"""Checkpoints: Accelerate state (model, optimizer, RNG) + textcl's own state, written atomically.

A checkpoint is a folder ``checkpoints/step-00000123``. It is first written under a hidden temporary name
and renamed when complete, so ``latest_checkpoint`` never returns a half-written one.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from textcl._io import read_json

_NAME = re.compile(r"^step-(\d{8})$")
STATE_FILE = "textcl_state.json"


def checkpoint_dirs(root: Path) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _NAME.match(p.name)) and (p / STATE_FILE).exists()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(root: Path) -> Path | None:
    dirs = checkpoint_dirs(root)
    return dirs[-1] if dirs else None


def save_checkpoint(accelerator, root: Path, step: int, state: dict, keep: int) -> Path:
    """Save Accelerate's state plus ``state`` (JSON) as ``root/step-{step}``; keep the newest ``keep``."""
    final = root / f"step-{step:08d}"
    tmp = root / f".step-{step:08d}.tmp"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in checkpoint_dirs(root)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator, path: Path) -> dict:
    """Restore Accelerate's state from ``path`` and return textcl's state dict."""
    accelerator.load_state(str(path))
    return read_json(path / STATE_FILE)
