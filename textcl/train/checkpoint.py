"""Checkpoints: Accelerate state (model, optimizer, RNG) + textcl's own state, written atomically.

A checkpoint is a folder ``checkpoints/step-00000123``. It is first written under a hidden temporary name
and renamed when complete, so ``latest_checkpoint`` never returns a half-written one.

A checkpoint also holds what the run writes outside Accelerate's state but reads back later (the best model
so far, as hard links: no copy of the weights), and the batch layout it was written with (processes, batch
size, ...): a resume restores the first and refuses a change in the second, so a resumed run selects, saves
and reports exactly what an uninterrupted one does.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from textcl._io import atomic_dir, read_json
from textcl.errors import TextclError

_NAME = re.compile(r"^step-(\d{8})$")
STATE_FILE = "textcl_state.json"
OUTPUTS = "outputs"  #: the checkpoint's copy of the run's outputs (``Checkpointer(outputs=...)``)


class ResumeMismatch(TextclError):
    """A checkpoint written with another batch layout than the resuming run's; the message says what differs."""


def _link_tree(src: Path, dst: Path) -> None:
    """Copy folder ``src`` to ``dst`` as hard links (a plain copy where links are not possible). The sources
    are never modified in place (model folders are written anew and renamed), so sharing their files is safe."""
    def link(a, b):
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)
    shutil.copytree(src, dst, copy_function=link, dirs_exist_ok=True)


def checkpoint_dirs(root: Path) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _NAME.match(p.name)) and (p / STATE_FILE).exists()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(root: Path) -> Path | None:
    dirs = checkpoint_dirs(root)
    return dirs[-1] if dirs else None


def save_checkpoint(accelerator, root: Path, step: int, state: dict, keep: int, outputs: tuple[Path, ...] = ()) -> Path:
    """Save Accelerate's state plus ``state`` (JSON) as ``root/step-{step}``, with a hard-linked copy of each
    existing folder of ``outputs`` (by name, under ``outputs/``); keep the newest ``keep``."""
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
        for folder in outputs:
            if folder.is_dir():
                _link_tree(folder, tmp / OUTPUTS / folder.name)
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


def layout_mismatch(saved: dict, current: dict) -> list[str]:
    """``"name: checkpoint X, this run Y"`` for each batch-layout value that differs."""
    # a key the checkpoint did not record (an older textcl) is not compared
    return [f"{k}: checkpoint {saved[k]!r}, this run {v!r}" for k, v in current.items() if k in saved and saved[k] != v]


class Checkpointer:
    """A run's checkpoints under ``OUT/checkpoints``: how the run starts (resumed or fresh) and when a
    checkpoint is written (every ``every`` steps and at the last, keeping the newest ``keep``).

    ``outputs``: folders the run writes outside Accelerate's state (the best model so far); each checkpoint
    keeps them as they were at its step, and a resume puts them back (or removes them when the checkpoint had
    none). ``layout``: what decides the batches' content (processes, batch size, accumulation, seed, data
    size); a checkpoint written with another layout is refused on resume."""

    def __init__(self, accelerator, root: Path, every: int | None, keep: int, *, outputs: tuple[Path, ...] = (),
                 layout: dict | None = None):
        self.acc, self.root, self.every, self.keep = accelerator, Path(root), every, keep
        self.outputs, self.layout = tuple(Path(p) for p in outputs), dict(layout or {})
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
            saved = read_json(self.resumed_from / STATE_FILE)
            if "layout" in saved and (diff := layout_mismatch(saved["layout"], self.layout)):
                raise ResumeMismatch(
                    f"cannot resume from {self.resumed_from}: it was written with another batch layout or selection "
                    f"({'; '.join(diff)}), so the resumed steps would see other batches, or weigh the best step on "
                    "another score, than the run it continues. "
                    "Resume with the checkpoint's settings, or start afresh without --resume.")
            state = load_checkpoint(acc, self.resumed_from)
            if acc.is_main_process and "layout" in saved:  # older checkpoints hold no outputs: leave them be
                self._restore_outputs(self.resumed_from)
            acc.print(f"textcl: resumed from {self.resumed_from} (step {state['step']})")
        elif acc.is_main_process:
            for old in (self.root, *stale):
                if old.exists():
                    shutil.rmtree(old)
        acc.wait_for_everyone()
        return state

    def due(self, step: int, last: bool) -> bool:
        return bool(self.every and (step % self.every == 0 or last))

    def _restore_outputs(self, checkpoint: Path) -> None:
        """Put each output folder back as ``checkpoint`` holds it; remove one it does not hold (written after
        the checkpoint by the interrupted run)."""
        for folder in self.outputs:
            kept = checkpoint / OUTPUTS / folder.name
            if kept.is_dir():
                with atomic_dir(folder) as tmp:
                    _link_tree(kept, tmp)
            elif folder.exists():
                shutil.rmtree(folder)

    def save(self, step: int, state: dict) -> Path:
        return save_checkpoint(self.acc, self.root, step, {**state, "layout": self.layout}, self.keep, self.outputs)
