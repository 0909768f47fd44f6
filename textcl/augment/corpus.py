"""Reading plain-text corpora: one text per line, UTF-8 (the reader lives in :mod:`textcl._io`)."""
from textcl._io import read_lines

__all__ = ["read_lines"]
