"""The precision each served model encodes in (``--precision``), chosen once at start and logged.

With several ``--workers``, the parent process resolves ``auto`` for every model before any worker starts
(:func:`decide_for_workers`) and hands each worker the result, so that every worker encodes alike whichever
answers a request (workers measuring side by side would disturb each other's timings).
"""
from __future__ import annotations

import logging

from textcl.models.encode_precision import Precise, choose_encode_precision, in_precision, settable

log = logging.getLogger("textcl.serve")
INDEX = "index"  #: the key of the index's model in ``ServeConfig.decided_precision``


def served(encoder, config, key: str, what: str):
    """``encoder`` wrapped to encode in ``config.precision`` (:func:`~textcl.models.encode_precision.in_precision`;
    a choice the parent process already made for ``key`` wins); logs the choice naming the model ``what``. An
    encoder already wrapped (the index's, shared with ``/v1``) is returned as it is."""
    if isinstance(encoder, Precise):
        return encoder
    requested = config.decided_precision.get(key, config.precision)
    out = in_precision(encoder, requested)
    if isinstance(out, Precise):
        if out.choice.disturbed:  # served fp32 where bf16 may be faster: say so where a warning-level log shows it
            log.warning("%s: %s (or pass --precision bf16)", what, out.choice.line())
        else:
            log.info("%s: %s", what, out.choice.line())
    return out


def precision_of(encoder) -> str | None:
    """``fp32`` or ``bf16``: what ``encoder`` encodes in as served; None when textcl cannot tell (a remote
    server's)."""
    if isinstance(encoder, Precise):
        return encoder.precision
    return "fp32" if hasattr(encoder, "encode_bf16") else None


def decide_for_workers(config, load, index_encoder=None) -> dict[str, str]:
    """``{key: "fp32" | "bf16"}`` for each ``--model`` spec (and :data:`INDEX`, given ``index_encoder``), resolving
    ``auto`` here, once; ``load(path)`` loads a model. Empty unless ``config.precision`` is ``auto``."""
    from textcl.serve.config import parse_model_spec

    if config.precision != "auto":
        return {}
    decided = {}
    encoders = {spec: (lambda p=parse_model_spec(spec)[1]: load(p)) for spec in config.models}
    if index_encoder is not None:
        encoders[INDEX] = lambda: index_encoder
    for key, make in encoders.items():
        encoder = make()
        if settable(encoder):  # the choice only: the workers make their own bf16 copies
            decided[key] = "bf16" if choose_encode_precision(encoder, "auto").resolved == "bf16" else "fp32"
    return decided
