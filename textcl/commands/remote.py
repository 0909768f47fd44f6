"""The ``--server URL`` option of ``textcl encode`` and ``textcl index build``: vectors from a server that
speaks the OpenAI embeddings API (:class:`textcl.encode.remote.RemoteEncoder`) instead of a local model."""
from __future__ import annotations

import argparse


def add_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server", metavar="URL",
                        help="take the vectors from a server that speaks the OpenAI embeddings API (textcl serve "
                        "--model, text-embeddings-inference, infinity, ...), e.g. http://gpu-box:8000; $TEXTCL_API_KEY "
                        "is sent as its key")


def server_encoder(args: argparse.Namespace, launch, batch_size: int):
    """The :class:`~textcl.encode.remote.RemoteEncoder` of ``--server``, after refusing the flags that only
    apply to a local model."""
    from textcl.encode.remote import RemoteEncoder
    from textcl.errors import ConfigError

    if launch.distributed:
        raise ConfigError("--server", "run one process: the server batches the requests of every client")
    for flag, attr in (("--bf16", "bf16"), ("--no-normalize", "no_normalize")):
        if getattr(args, attr, False):
            raise ConfigError(flag, "applies to a local model; with --server the vectors are as the server's model "
                              "makes them")
    return RemoteEncoder(args.server, args.model, batch_size=batch_size)
