"""Recommendation from interaction logs: items and users (their histories) as texts, one encoder for both.

:mod:`~textcl.recommend.split` splits a log (read by :mod:`textcl.data.interactions`) leave-one-out in time
order, optionally holding items out for cold start; :mod:`~textcl.recommend.metrics` ranks the whole catalogue;
:mod:`~textcl.recommend.popularity` is the baseline; :mod:`~textcl.recommend.task` builds training rows and
ranking sets for ``data.kind: interactions``.
"""
from textcl.recommend.split import ColdSplit, Split, cold_split, item_counts, leave_one_out

__all__ = ["ColdSplit", "Split", "cold_split", "item_counts", "leave_one_out"]
