"""``textcl serve [INDEX_DIR] [--model M ...]``: a thin shell over :func:`textcl.serve.run`."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from textcl.commands.backend import add_argument as add_backend_argument

    p = sub.add_parser("serve", help="serve an index (search API, writes, a search page) and/or models (the OpenAI "
                       "embeddings API) over HTTP",
                       description="Serve an index folder, embedding models, or both over HTTP (FastAPI + uvicorn). "
                       "With an index: the search page at http://HOST:PORT/ and the search API; with --model: the "
                       "OpenAI embeddings API (POST /v1/embeddings, GET /v1/models). /docs describes both. Writes are "
                       "off unless --allow-writes.")
    p.add_argument("index", metavar="INDEX_DIR", nargs="?",
                   help="index folder (from `textcl index build`); leave it out to serve only --model")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="default 8000")
    p.add_argument("--model", action="append", default=[], metavar="[NAME=]MODEL",
                   help="serve MODEL (a folder or hub name) on the OpenAI embeddings API, as NAME or as given "
                   "(repeatable: a request's `model` picks one). With INDEX_DIR, the index is searched with the model "
                   "its manifest names, always; a --model that is that model (the same folder) shares it")
    p.add_argument("--index-model", metavar="MODEL",
                   help="search INDEX_DIR with MODEL (a folder or hub name) instead of the model its manifest names: "
                   "for an index whose model folder moved, or one built through --server; a folder must have the "
                   "weights the manifest's fingerprint records, and the index's width")
    add_backend_argument(p)
    p.add_argument("--workers", type=int, default=1,
                   help="processes, each with its own copy of the index (read-only serving only; default 1)")
    w = p.add_argument_group("writes")
    w.add_argument("--allow-writes", action="store_true",
                   help="enable POST /documents and DELETE /documents/ID (durable: INDEX_DIR.wal.sqlite)")
    w.add_argument("--api-key", help="bearer token the write endpoints require; needed with --allow-writes on a "
                   "non-loopback --host (prefer the TEXTCL_API_KEY environment variable: arguments show in ps)")
    w.add_argument("--save-interval", type=float, default=30.0, metavar="SECONDS",
                   help="save the vector index this often when it changed (default 30; also on shutdown)")
    b = p.add_argument_group("micro-batching")
    b.add_argument("--no-batching", action="store_true", help="answer each request alone")
    b.add_argument("--max-batch", type=int, default=64, help="queries encoded in one forward (default 64)")
    b.add_argument("--max-wait-ms", type=float, default=2.0,
                   help="under load, how long a query waits for others to batch with (default 2; a lone "
                   "client never waits)")
    b.add_argument("--threads", type=int, help="torch threads for encoding per process (default: half the usable "
                   "cores split between the workers, at least 1: one per core collapsed beside a busy process)")
    b.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help="what the models encode in (default auto: bf16 weights where it measures faster on this "
                        "machine, once per machine and model shape, and its vectors agree with fp32's to a cosine "
                        "of 0.9999 or more; else fp32)")
    lim = p.add_argument_group("limits")
    lim.add_argument("--max-k", type=int, default=1000, help="largest k (default 1000)")
    lim.add_argument("--max-queries", type=int, default=64, help="queries per POST /search (default 64)")
    lim.add_argument("--max-hits", type=int, default=1000,
                     help="queries x k per search request (default 1000); bounds the size of an answer")
    lim.add_argument("--max-response-chars", type=int, default=8_000_000,
                     help="characters of document text and titles in one search answer, and of vectors in one "
                     "/v1/embeddings answer (default 8,000,000); a larger answer is refused (422 naming fields and "
                     "text_chars; 413 under /v1 naming input, dimensions and encoding_format), which make it smaller")
    lim.add_argument("--max-documents", type=int, default=1000, help="documents per POST /documents (default 1000)")
    lim.add_argument("--max-inputs", type=int, default=2048, help="texts per POST /v1/embeddings (default 2048)")
    lim.add_argument("--max-body-mb", type=float, default=4.0, help="request body limit (default 4 MiB)")
    p.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                   help="allow browser pages from ORIGIN to search and, with --allow-writes, to write "
                   "(repeatable; default: no CORS; '*' with writes needs an API key)")
    p.add_argument("--allowed-host", action="append", default=[], metavar="HOST",
                   help="also answer requests for HOST[:PORT] (repeatable; '*': any): the name clients use behind "
                   "a proxy or with --host 0.0.0.0. By default only loopback names, the --host address and, "
                   "bound to all interfaces, IP addresses are answered (a guard against DNS rebinding)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace):
    from textcl.serve.config import ServeConfig

    return ServeConfig(  # the index keeps its manifest's model: a --model never replaces it, --index-model does
        args.index, model=args.index_model, models=list(args.model), host=args.host, port=args.port,
        workers=args.workers,
        allow_writes=args.allow_writes, api_key=args.api_key, cors_origins=list(args.cors_origin),
        allowed_hosts=list(args.allowed_host),
        batching=not args.no_batching, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, threads=args.threads,
        backend=args.backend, precision=args.precision,
        max_k=args.max_k, max_queries=args.max_queries, max_hits=args.max_hits,
        max_response_chars=args.max_response_chars, max_documents=args.max_documents, max_inputs=args.max_inputs,
        max_body_bytes=int(args.max_body_mb * 2**20), save_interval_s=args.save_interval, log_level=args.log_level,
    ).validate()


def run(args: argparse.Namespace) -> int:
    import importlib.util

    from textcl.errors import TextclError

    config = config_from_args(args)
    missing = [m for m in ("fastapi", "uvicorn") if importlib.util.find_spec(m) is None]
    if missing:
        raise TextclError(f"textcl serve needs {' and '.join(missing)}: pip install 'textcl[serve]'")
    from textcl.serve import run as serve

    serve(config)  # uvicorn logs the address once the index and models are loaded
    return 0
