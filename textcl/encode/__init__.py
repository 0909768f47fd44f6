"""Encoding a corpus across processes launched by ``torchrun``: each rank embeds a contiguous shard into its
own memmap (resumable chunk by chunk) and rank 0 assembles the result. Used by ``textcl encode`` and the
streaming index build (:mod:`textcl.index.streaming`).

* :mod:`textcl.encode.dist`: the launch (rank, world size) from torchrun's environment, process-group start,
  barrier;
* :mod:`textcl.encode.shards`: shard bounds, one rank's resumable shard, assembly;
* :mod:`textcl.encode.texts`: a list of texts sharded along the encoder's own batches (``textcl encode``).
"""
from textcl.encode.dist import Launch, launch_from_env
from textcl.encode.shards import balanced_bounds, encode_shard, shard_bounds
from textcl.encode.texts import encode_sharded

__all__ = ["Launch", "launch_from_env", "shard_bounds", "balanced_bounds", "encode_shard", "encode_sharded"]
