"""Text normalisation shared by the whole package; imports nothing from textcl."""
from __future__ import annotations


def normalize_text(text: str) -> str:
    """The form in which two texts count as the same text: lower-cased, whitespace runs collapsed to one
    space, surrounding whitespace removed. ``normalize_text("  A  Cat\\n") == "a cat"``."""
    return " ".join(text.lower().split())
