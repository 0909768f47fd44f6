"""The ``--backend`` option of the commands that encode (encode, index, eval, mine, serve).

``torch`` (the default), ``onnx`` (ONNX Runtime on the CPU, the ``textcl[onnx]`` extra) or ``auto``: onnx where it
measured at least 5% faster than torch on this CPU for the model's shape (measured once per machine and cached,
:mod:`textcl.models.backend_choice`) and the model's pooling allows it, else torch. ``auto``'s decision is printed
once to standard error and recorded in the ``--json`` reports (:func:`report`). The environment variable
``TEXTCL_BACKEND`` sets the default. See :meth:`textcl.models.Encoder.use_backend`.
"""
from __future__ import annotations

import argparse

from textcl.models.onnx_backend import BACKENDS, DEFAULT_BACKEND, resolve_backend as resolve  # noqa: F401


def for_command(choice: str | None, bf16: bool = False) -> str:
    """The backend a command loads its model with: torch under ``--bf16`` (autocast runs in torch, so an export
    would be wasted), else :func:`resolve`."""
    return "torch" if bf16 else resolve(choice)


def report(encoder) -> dict | None:
    """What a ``--json`` report records of the backend: the encoder's
    :class:`~textcl.models.backend_choice.BackendChoice` (requested, resolved, the measured ``onnx_over_torch``,
    cached, disturbed, reason), or None for an encoder without one."""
    choice = getattr(encoder, "backend_choice", None)
    return choice.to_dict() if choice is not None else None


def add_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", choices=BACKENDS, default=None,
                        help="run the transformer in torch, ONNX Runtime (onnx: CPU, the textcl[onnx] extra; the "
                             "model is exported once and cached) or auto: onnx only where it measured at least 5%% "
                             "faster than torch on this CPU (measured once per machine and model shape, cached; "
                             f"the decision is printed) (default: $TEXTCL_BACKEND, else {DEFAULT_BACKEND})")


def load_encoder(name: str, backend: str | None = None):
    """The model ``name`` with the ``--backend`` in effect."""
    from textcl.models import Encoder

    return Encoder.load(name, backend=resolve(backend))
