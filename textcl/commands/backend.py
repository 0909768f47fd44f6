"""The ``--backend`` option of the commands that encode (encode, index, eval, mine, serve).

``torch`` (the default), ``onnx`` (ONNX Runtime on the CPU, the ``textcl[onnx]`` extra) or ``auto`` (onnx on a
CPU when it is installed and the model's pooling allows it, else torch). The environment variable
``TEXTCL_BACKEND`` sets the default. See :meth:`textcl.models.Encoder.use_backend`.
"""
from __future__ import annotations

import argparse

from textcl.models.onnx_backend import BACKENDS, DEFAULT_BACKEND, resolve_backend as resolve  # noqa: F401


def for_command(choice: str | None, bf16: bool = False) -> str:
    """The backend a command loads its model with: torch under ``--bf16`` (autocast runs in torch, so an export
    would be wasted), else :func:`resolve`."""
    return "torch" if bf16 else resolve(choice)


def add_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", choices=BACKENDS, default=None,
                        help="run the transformer in torch, ONNX Runtime (onnx: CPU, the textcl[onnx] extra; the "
                             "model is exported once and cached) or auto: onnx on a CPU when installed (default: "
                             f"$TEXTCL_BACKEND, else {DEFAULT_BACKEND})")
