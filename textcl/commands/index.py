"""``textcl index build|search|add|delete|info``: a thin shell over :class:`textcl.index.SearchIndex`."""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

from textcl.commands.backend import load_encoder


def _add_server_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server", metavar="URL", help="an index built with --server: confirms the server its "
                        "manifest records (the same origin), where the queries and $TEXTCL_API_KEY go; required for "
                        "such an index unless --model gives a local model (checked against the probe recorded at the "
                        "build)")


def register(sub: argparse._SubParsersAction) -> None:
    from textcl.commands.backend import add_argument as add_backend_argument
    from textcl.commands.remote import add_argument as add_remote_argument

    p = sub.add_parser("index", help="build and query a FAISS semantic search index")
    isub = p.add_subparsers(dest="index_command", required=True, metavar="ACTION")

    b = isub.add_parser("build", help="embed documents and write an index folder")
    b.add_argument("--model", help="local folder or hub name (required without --server); with --server, the served "
                   "model's name (default: the server's only model): the manifest records the server and that name, "
                   "and searches go through the server; a served name that is a local model folder is also "
                   "recorded as the index's model, once the server embeds a probe text as that folder does "
                   "(serve it by its path so that `textcl serve` can load it)")
    add_backend_argument(b)
    add_remote_argument(b)
    b.add_argument("--input", required=True, help="documents: .jsonl (text, id/_id, title, ...), .txt (one per "
                   "line), .csv/.tsv (a text column) or a BEIR folder")
    b.add_argument("--out", required=True, help="index folder to write (replaced atomically)")
    b.add_argument("--factory", default="Flat", help="FAISS factory string (Flat, HNSW32, IVF1024,Flat, "
                   "IVF1024,PQ32, SQ8, ...), binary (1 bit per dimension), a compressed first pass plus +rescore[R] "
                   "(binary+rescore, SQ8+rescore4, IVF1024,SQ8+rescore: R*k candidates re-ranked with the float "
                   "vectors kept on disk), or auto (default: Flat)")
    b.add_argument("--chunk-size", type=int, default=10_000, help="documents per embedded chunk (default 10000)")
    b.add_argument("--batch-size", type=int, default=64)
    b.add_argument("--memory-budget-gb", type=float, default=4.0, help="for --factory auto (default 4)")
    b.add_argument("--no-resume", action="store_true", help="discard a leftover OUT.partial folder")
    b.add_argument("--on-disk", action="store_true", help="keep the IVF inverted lists in a memory-mapped file "
                   "(OUT/index.ivfdata) instead of RAM; needs an IVF factory (auto: IVF{~4 sqrt(N)},SQ8); the "
                   "index is read-only after the build (delete works, add does not)")
    b.add_argument("--dim", type=int, help="keep the first DIM dimensions of each embedding, renormalised (a "
                   "Matryoshka-trained model); searches with the manifest's model truncate queries the same way")
    b.set_defaults(func=run_build)

    s = isub.add_parser("search", help="query an index")
    s.add_argument("index", help="index folder")
    s.add_argument("query", help="a query, or a file of queries (.txt one per line, .jsonl with text)")
    s.add_argument("-k", type=int, default=10, help="results per query (default 10)")
    s.add_argument("--model", help="override the model named in the manifest")
    _add_server_argument(s)
    add_backend_argument(s)
    s.add_argument("--nprobe", type=int, help="IVF lists to visit")
    s.add_argument("--ef-search", type=int, help="HNSW search breadth")
    s.add_argument("--rescore", type=int, metavar="R", help="+rescore indexes: candidates per result re-ranked "
                   "with the float vectors (default: the index's; 0: the compressed scores only)")
    s.add_argument("--json", action="store_true", help="print JSON lines: {query, hits: [{id, score, text, metadata}]}")
    s.set_defaults(func=run_search, governed_work="encode")

    a = isub.add_parser("add", help="add (or with --upsert, replace) documents in an index")
    a.add_argument("index")
    a.add_argument("--input", required=True, help="documents, as for build")
    a.add_argument("--upsert", action="store_true", help="replace documents whose id exists instead of failing")
    a.add_argument("--model", help="override the model named in the manifest")
    _add_server_argument(a)
    add_backend_argument(a)
    a.add_argument("--batch-size", type=int, default=64)
    a.set_defaults(func=run_add, governed_work="encode")

    d = isub.add_parser("delete", help="delete documents by id")
    d.add_argument("index")
    d.add_argument("ids", nargs="+", help="document ids (or @FILE with one id per line)")
    d.add_argument("--missing-ok", action="store_true", help="ignore ids that are not in the index")
    d.set_defaults(func=run_delete)

    i = isub.add_parser("info", help="print an index's manifest")
    i.add_argument("index")
    i.set_defaults(func=run_info)


def _open(path: str, model: str | None, need_encoder: bool = True, backend: str | None = None,
          server: str | None = None):
    """The index folder ``path`` with the encoder its queries and documents are embedded with: ``--model``, checked
    against the manifest's fingerprint or probe, else the index's own model, else the server that built it, once
    ``server`` (``--server``) confirms it; truncated to an index built with ``--dim`` (see
    :mod:`textcl.index.identity`)."""
    from textcl.index import SearchIndex
    from textcl.index.encoding import truncate_to_index
    from textcl.index.identity import checked_encoder
    from textcl.recommend.tower import load_model

    manifest = SearchIndex.read_manifest(path)
    encoder = None
    if need_encoder and model is None and not manifest.get("model") and isinstance(manifest.get("server"), dict):
        encoder = _recorded_server(path, manifest, server)  # built with --server: its queries go there too
        truncate_to_index(encoder, int(manifest["dim"]))
    elif need_encoder:
        if server is not None:
            from textcl.errors import ConfigError

            raise ConfigError("--server", f"{path} was built with a local model, not through a server (or --model is "
                              "given): leave --server out")
        encoder = checked_encoder(path, manifest, model, "--model",
                                  lambda name: load_model(name, lambda n: load_encoder(n, backend), backend))
    return SearchIndex.load(path, encoder=encoder)


def _recorded_server(path: str, manifest: dict, server: str | None):
    """A RemoteEncoder for the server the manifest records, when ``--server`` names the same origin: a downloaded
    index must not send the queries and $TEXTCL_API_KEY wherever its manifest says."""
    from textcl.encode.remote import RemoteEncoder, base_url
    from textcl.encode.remote_http import _origin
    from textcl.errors import ConfigError

    recorded = manifest["server"]["server"]
    if server is None:
        raise ConfigError("--server", f"{path} was built through the server {recorded}, which its manifest.json "
                          f"records: its queries (and $TEXTCL_API_KEY) would go there; pass --server {recorded} to "
                          "confirm")
    if _origin(base_url(server)) != _origin(recorded):
        raise ConfigError("--server", f"{server} is not the server {recorded} that {Path(path) / 'manifest.json'} "
                          f"records (another origin); expected --server {recorded}")
    return RemoteEncoder(base_url(server), manifest["server"].get("model"))


def _model_name(model: str) -> str:
    """What the manifest records: the absolute path of a local model folder (so the index can be searched
    from any directory), else the name as given."""
    path = Path(model).expanduser()
    return str(path.resolve()) if path.is_dir() else model


def _recorded_model(model: str | None, server: dict | None) -> str | None:
    """The manifest's ``model``: ``--model`` (see :func:`_model_name`); with ``--server`` only a local model
    folder (a served name is no model to load), else None."""
    if server is not None and not (model and Path(model).expanduser().is_dir()):
        return None
    return _model_name(model)


def run_build(args: argparse.Namespace) -> int:
    from textcl._io import check_writable
    from textcl.encode import dist, launch_from_env
    from textcl.index import build_streaming
    from textcl.data.documents import read_documents
    from textcl.recommend.tower import is_tower, load_model
    from textcl.thread_governor import governing

    if args.server is None and args.model is None:
        from textcl.errors import ConfigError

        raise ConfigError("--model", "required: a local folder or hub name (or --server URL)")
    check_writable(args.out, "--out", folder=True)
    if args.factory != "auto":
        from textcl.index.factory import parse_factory

        parse_factory(args.factory)  # a typo fails before the model loads and the corpus is embedded
    docs = read_documents(args.input)
    first = next(docs, None)  # fail on an unreadable input before loading the model
    launch = launch_from_env()  # under torchrun every rank embeds a shard and rank 0 writes the index
    dist.start(launch)  # before the model loads: it picks this rank's GPU
    server = None
    if args.server is not None:
        from textcl.commands.remote import server_encoder

        encoder = server_encoder(args, launch, args.batch_size)
        server = {"server": encoder.url, "model": encoder.model}
        if _recorded_model(args.model, server) is not None:  # recorded: queries will be embedded with it here
            from textcl.commands.remote import check_served_weights

            check_served_weights(encoder, args.model, args.backend)
    else:
        encoder = load_model(args.model, lambda n: load_encoder(n, args.backend), args.backend)
    recommender = is_tower(args.model)  # a sequence recommender's folder
    if args.dim is not None and recommender:
        from textcl.errors import ConfigError

        raise ConfigError("--dim", f"{args.model} is a sequence recommender: its items are {encoder.dim}-dimensional "
                          "as trained (--dim keeps the first dimensions of a Matryoshka text model); leave it out")
    if args.dim is not None:
        if not 1 <= args.dim <= encoder.dim:
            from textcl.errors import ConfigError

            raise ConfigError("--dim", f"expected 1 to the model's dimension {encoder.dim}, got {args.dim}")
        encoder.truncate_dim = args.dim
    if args.factory != "auto":
        from textcl.index.encoding import encoder_dim
        from textcl.index.factory import check_factory

        check_factory(args.factory, encoder_dim(encoder))  # binary needs dim % 8 == 0

    def all_docs():
        if first is not None:
            yield first
        yield from docs

    documents = all_docs()
    if recommender and server is None:  # a trained id must come with its trained text
        documents = encoder.checked(documents, args.input)

    # torch's threads follow the cores other processes leave free (torchrun's processes are pinned already)
    with governing("encode", processes=launch.local_world) if server is None else contextlib.nullcontext():
        index = build_streaming(documents, encoder, args.out, factory=args.factory, chunk_size=args.chunk_size,
                                batch_size=args.batch_size, resume=not args.no_resume,
                                memory_budget=int(args.memory_budget_gb * 2**30),
                                model_name=_recorded_model(args.model, server), server=server,
                                show_progress=sys.stderr.isatty(), source=args.input, launch=launch,
                                on_disk=args.on_disk)
    if index is None:  # a rank other than 0, its shard done
        return 0
    info = index.info()
    print(f"wrote {args.out}: {info['n_docs']} documents, factory {info['factory']}, dim {info['dim']}")
    return 0


def run_search(args: argparse.Namespace) -> int:
    from textcl.data.documents import read_queries

    queries = read_queries(args.query)
    index = _open(args.index, args.model, backend=args.backend, server=args.server)
    results = index.search(queries, k=args.k, nprobe=args.nprobe, ef_search=args.ef_search, rescore=args.rescore)
    for query, hits in zip(queries, results):
        if args.json:
            print(json.dumps({"query": query, "hits": [h.to_dict() for h in hits]}, ensure_ascii=False))
            continue
        print(f"query: {query}")
        for rank, h in enumerate(hits, start=1):
            text = h.text if len(h.text) <= 100 else h.text[:97] + "..."
            print(f"{rank:3d}  {h.score:.4f}  {h.id}  {text}")
    return 0


def run_add(args: argparse.Namespace) -> int:
    from textcl._io import check_writable
    from textcl.data.documents import read_documents

    check_writable(args.index, "index", folder=True)  # the folder is rewritten as a whole
    docs = list(read_documents(args.input))
    index = _open(args.index, args.model, backend=args.backend, server=args.server)
    if not args.upsert and callable(getattr(index.encoder, "checked", None)):
        docs = list(index.encoder.checked(docs, args.input))  # a recommender's trained id with another text
    texts, ids, meta = [d.text for d in docs], [d.id for d in docs], [d.metadata for d in docs]
    if args.upsert:
        index.upsert(texts, ids, meta, batch_size=args.batch_size)
    else:
        index.add(texts, ids, meta, batch_size=args.batch_size)
    index.save(args.index)
    print(f"{'upserted' if args.upsert else 'added'} {len(docs)} documents; {len(index)} in {args.index}")
    return 0


def run_delete(args: argparse.Namespace) -> int:
    from textcl._io import check_writable
    from textcl.data.texts import read_ids

    check_writable(args.index, "index", folder=True)  # the folder is rewritten as a whole
    ids: list[str] = []
    for item in args.ids:
        if item.startswith("@"):
            ids.extend(read_ids(item[1:]))
        else:
            ids.append(item)
    index = _open(args.index, None, need_encoder=False)
    n = index.delete(ids, missing_ok=args.missing_ok)
    index.save(args.index)
    print(f"deleted {n} documents; {len(index)} in {args.index}")
    return 0


def run_info(args: argparse.Namespace) -> int:
    from textcl.index import SearchIndex

    manifest = SearchIndex.read_manifest(args.index)
    index = SearchIndex.load(args.index)  # verifies checksums
    info = index.info()
    index.close()
    for key in ("rescore", "memory_bytes_per_vector", "float32_bytes_per_vector", "disk_bytes_per_vector"):
        if key in info:  # also for folders saved before these were recorded
            manifest[key] = info[key]
    print(json.dumps(manifest, indent=2))
    return 0
