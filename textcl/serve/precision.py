"""The precision each served model encodes in (``--precision``), chosen once at start and logged."""
from __future__ import annotations

import logging

from textcl.models.encode_precision import ServedPrecision

log = logging.getLogger("textcl.serve")


def served_precision(encoder, requested: str, what: str) -> ServedPrecision:
    """Run ``encoder`` in the precision ``requested`` resolves to (measured for ``auto``); logs the choice and
    why, naming the model as ``what``. Give it back with the result's ``restore()``."""
    served = ServedPrecision(encoder, requested)
    log.info("%s: %s", what, served.choice.line())
    return served
