"""What a training run returns (:func:`textcl.train.train`, either trainer)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class TrainResult:
    """``model_dir`` is None and ``finished`` False when the run stopped before its end (``stop_after_step``, or
    an ``on_eval`` that returned ``STOP``); ``steps`` counts optimizer steps (epochs for the sequence tower)."""

    output_dir: Path
    model_dir: Path | None
    metrics: dict
    steps: int
    finished: bool
