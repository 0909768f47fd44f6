"""``textcl encode``: embed a file of texts to a .npy matrix (here, or on a server: ``--server URL``)."""
from __future__ import annotations

import argparse
import contextlib


def register(sub: argparse._SubParsersAction) -> None:
    from textcl.commands.backend import add_argument as add_backend_argument
    from textcl.commands.remote import add_argument as add_remote_argument

    p = sub.add_parser("encode", help="embed texts from a .txt, .jsonl or .csv file into a .npy array")
    p.add_argument("--model", help="local folder or hub name (required without --server); with --server, the served "
                   "model's name (default: the server's only model)")
    add_remote_argument(p)
    p.add_argument("--input", required=True, help=".txt (one text per line), .jsonl or .csv (a 'text' field)")
    p.add_argument("--out", required=True, help="output .npy path (float32, shape (n, d)); written atomically")
    p.add_argument("--field", default="text", help="field/column holding the text in .jsonl/.csv (default: text)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--no-normalize", action="store_true", help="keep raw (un-normalised) embeddings")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (runs in torch)")
    add_backend_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from textcl._io import atomic_save_npy, check_writable
    from textcl.data.texts import read_texts
    from textcl.encode import launch_from_env
    from textcl.commands.backend import for_command
    from textcl.models import Encoder
    from textcl.thread_governor import governing

    launch = launch_from_env()
    if args.server is None and args.model is None:
        from textcl.errors import ConfigError

        raise ConfigError("--model", "required: a local folder or hub name (or --server URL)")
    if launch.distributed and args.server is None:
        return run_sharded(args, launch)
    check_writable(args.out, "--out")
    texts = read_texts(args.input, field=args.field)
    if args.server is not None:
        from textcl.commands.remote import server_encoder

        encoder = server_encoder(args, launch, args.batch_size)
    else:
        encoder = Encoder.load(args.model, backend=for_command(args.backend, args.bf16))
    # torch's threads follow the cores other processes leave free (nothing runs here with --server)
    with governing("encode") if args.server is None else contextlib.nullcontext():
        emb = encoder.encode(texts, batch_size=args.batch_size, normalize=False if args.no_normalize else None,
                             show_progress=True, bf16=args.bf16)
    atomic_save_npy(args.out, emb)
    print(f"wrote {args.out}: {emb.shape[0]} x {emb.shape[1]} float32")
    return 0


def run_sharded(args: argparse.Namespace, launch) -> int:
    """Under torchrun: every rank reads the texts and encodes its shard into ``OUT.partial/`` (resumable per
    shard); rank 0 writes ``--out``, bit for bit what one process writes (see
    :func:`textcl.encode.encode_sharded`), and the other ranks exit once every shard is done."""
    import shutil
    from pathlib import Path

    from textcl._io import atomic_save_npy, check_writable
    from textcl.commands.index import _model_name
    from textcl.data.texts import read_texts
    from textcl.encode import dist, encode_sharded
    from textcl.index.streaming import input_fingerprint
    from textcl.commands.backend import for_command
    from textcl.models import Encoder

    check_writable(args.out, "--out")
    texts = read_texts(args.input, field=args.field)
    out = Path(args.out)
    work = out.with_name(out.name + ".partial")
    dist.start(launch)  # before the model loads: it picks this rank's GPU
    encoder = Encoder.load(args.model, backend=for_command(args.backend, args.bf16))
    key = {"input": input_fingerprint(args.input), "field": args.field, "model": _model_name(args.model),
           "normalize": not args.no_normalize, "bf16": bool(args.bf16), "backend": encoder.backend}
    emb = encode_sharded(encoder, texts, work, launch, dim=encoder.truncate_dim or encoder.dim, key=key,
                         batch_size=args.batch_size, show_progress=True,
                         normalize=False if args.no_normalize else None, bf16=args.bf16)
    if emb is None:
        return 0
    atomic_save_npy(args.out, emb)
    shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {args.out}: {emb.shape[0]} x {emb.shape[1]} float32 ({launch.world} processes)")
    return 0
