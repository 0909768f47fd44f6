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


PROBE = "A probe text: the same weights give it the same vector."
#: other weights give far lower; a server encoding in bf16 (``textcl serve --precision auto``) or fp16 stays above
MIN_COSINE = 0.999


def check_served_weights(remote, folder: str, backend: str | None) -> None:
    """ConfigError (``--model``) unless the server embeds a probe text as the local model folder ``folder``
    does: an index that records ``folder`` embeds its queries there, so other weights would rank nonsense."""
    import numpy as np

    from textcl.commands.backend import load_encoder
    from textcl.errors import ConfigError

    served = np.asarray(remote.encode([PROBE]), dtype=np.float64)[0]
    local = np.asarray(load_encoder(folder, backend).encode([PROBE]), dtype=np.float64)[0]
    if served.shape == local.shape:
        cosine = float(served @ local / (np.linalg.norm(served) * np.linalg.norm(local) or 1.0))
        if cosine >= MIN_COSINE:
            return
        how = f"cosine {cosine:.4f} between their vectors of a probe text; expected {MIN_COSINE} or more"
    else:
        how = f"vectors of {served.shape[0]} and {local.shape[0]} dimensions"
    raise ConfigError("--model", f"the server {remote.url} serves {remote.model!r} with other weights than the local "
                      f"folder {folder} ({how}): searches would embed queries with the local one; serve that folder "
                      "there, or give --model as a name the server serves that is no local folder")
