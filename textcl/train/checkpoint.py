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


class Checkpointer:
    """A run's checkpoints under ``OUT/checkpoints``: how the run starts (resumed or fresh) and when a
    checkpoint is written (every ``every`` steps and at the last, keeping the newest ``keep``)."""

    def __init__(self, accelerator, root: Path, every: int | None, keep: int):
        self.acc, self.root, self.every, self.keep = accelerator, Path(root), every, keep
        self.resumed_from: Path | None = None

    def start(self, resume: bool, fresh_state: dict, stale: tuple[Path, ...] = ()) -> dict:
        """The state to start from: the newest complete checkpoint's when ``resume`` (and one exists), else
        ``fresh_state``, after removing this folder's old checkpoints and the ``stale`` outputs of an earlier
        run, which would otherwise mix with this run's."""
        acc = self.acc
        self.resumed_from = latest_checkpoint(self.root) if resume else None
        state = fresh_state
        if resume and self.resumed_from is None:
            acc.print(f"textcl: no checkpoint under {self.root}; starting from scratch")
        if self.resumed_from is not None:
            state = load_checkpoint(acc, self.resumed_from)
            acc.print(f"textcl: resumed from {self.resumed_from} (step {state['step']})")
        elif acc.is_main_process:
            for old in (self.root, *stale):
                if old.exists():
                    shutil.rmtree(old)
        acc.wait_for_everyone()
        return state

    def due(self, step: int, last: bool) -> bool:
        return bool(self.every and (step % self.every == 0 or last))

    def save(self, step: int, state: dict) -> Path:
        return save_checkpoint(self.acc, self.root, step, state, self.keep)
