"""The index thread's own costs at 100k documents: per-search bookkeeping, and searches while the index is saved.

No model and no HTTP: random unit vectors (a hashing "encoder" turns a query text into a fixed random vector)
behind :class:`textcl.serve.service.IndexService`, the object the routes call, so what is measured is what
the service adds around FAISS.

* ``bookkeeping``: an ``IVF256,Flat`` index of N documents (inverted files keep deleted ids as tombstones)
  with 10% of them deleted; the median time of one single-query search through the service, and of the
  document count + tombstone list that every search batch needs.
* ``save``: a writable ``Flat`` index of N 384-d documents; one write, then a save, while a client searches
  without pause; the median and worst latency of the searches answered during the save, against searches
  with no save running. Repeated ``--rounds`` times.

    python benchmarks/bench_serve_ops.py                  # 100,000 documents (~1 min on 2 cores)
    python benchmarks/bench_serve_ops.py --docs 5000      # smoke
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


class HashEncoder:
    """Any text -> a fixed random unit vector (seeded by its CRC-32): an encoder that costs nothing."""

    def __init__(self, dim: int):
        self.dim = dim

    def encode(self, texts):
        out = np.stack([np.random.default_rng(zlib.crc32(t.encode())).standard_normal(self.dim) for t in texts])
        return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)


def build(folder: Path, n: int, dim: int, factory: str, deleted: float = 0.0) -> Path:
    from textcl.index import SearchIndex

    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((n, dim)).astype(np.float32)
    texts = [f"document {i}: " + "some words that stand for a passage of ordinary length " * 5 for i in range(n)]
    index = SearchIndex.build(texts, ids=[f"d{i}" for i in range(n)], embeddings=vecs, factory=factory,
                              model_name="hash")
    if deleted:
        index.delete([f"d{i}" for i in range(0, n, round(1 / deleted))])
    index.save(folder)
    index.close()
    return folder


def service(folder: Path, dim: int, **options):
    from textcl.serve import ServeConfig
    from textcl.serve.service import IndexService

    return IndexService(ServeConfig(folder, **options), HashEncoder(dim)).start()


def ms(seconds: list[float]) -> str:
    return f"{statistics.median(seconds) * 1000:.2f}"


def bench_bookkeeping(root: Path, n: int, repeats: int) -> None:
    from textcl.index.factory import ivf_nlist

    factory = f"IVF{min(256, ivf_nlist(n))},Flat"
    svc = service(build(root / "ivf", n, 64, factory, deleted=0.1), 64)
    store = svc.index.store

    def counts():
        started = time.perf_counter()
        len(store), store.tombstones()
        return time.perf_counter() - started

    async def searches():
        out = []
        for i in range(repeats):
            started = time.perf_counter()
            await svc.search([f"query {i}"], 10)
            out.append(time.perf_counter() - started)
        return out

    took = asyncio.run(searches())
    book = [svc.batcher.call(counts).result() for _ in range(repeats)]
    info = asyncio.run(svc.info())
    svc.close()
    print(f"bookkeeping: {info['n_docs']:,} documents, {info['n_tombstones']:,} tombstones ({factory}, d=64)")
    print(f"  one search through the service: median {ms(took)} ms over {repeats}")
    print(f"  count + tombstone list:          median {ms(book)} ms over {repeats}")


def bench_save(root: Path, n: int, rounds: int) -> None:
    from textcl.index import Document

    svc = service(build(root / "flat", n, 384, "Flat"), 384, allow_writes=True, save_interval_s=3600)

    async def run():
        quiet, during, saves = [], [], []
        for i in range(rounds):
            for _ in range(5):
                started = time.perf_counter()
                await svc.search([f"quiet {i}"], 10)
                quiet.append(time.perf_counter() - started)
            await svc.write([Document(f"new-{i}", f"a new document {i}")])
            started_save = time.perf_counter()
            save = asyncio.ensure_future(svc.save())
            await asyncio.sleep(0)  # let the save begin
            while not save.done():
                started = time.perf_counter()
                await svc.search([f"during {i}"], 10)
                during.append(time.perf_counter() - started)
            await save
            saves.append(time.perf_counter() - started_save)
        return quiet, during, saves

    quiet, during, saves = asyncio.run(run())
    svc.close()
    print(f"save: {n:,} documents (Flat, d=384), {rounds} saves of median {ms(saves)} ms")
    print(f"  searches with no save running: median {ms(quiet)} ms, worst {max(quiet) * 1000:.2f} ms")
    print(f"  searches during a save:        median {ms(during)} ms, worst {max(during) * 1000:.2f} ms "
          f"({len(during)} answered)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--docs", type=int, default=100_000, help="documents in each index (default 100000)")
    p.add_argument("--repeats", type=int, default=200, help="searches for the bookkeeping medians (default 200)")
    p.add_argument("--rounds", type=int, default=5, help="saves measured (default 5)")
    p.add_argument("--only", choices=["bookkeeping", "save"], help="run one of the two")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="textcl-bench-serve-ops-") as tmp:
        if args.only in (None, "bookkeeping"):
            bench_bookkeeping(Path(tmp), args.docs, args.repeats)
        if args.only in (None, "save"):
            bench_save(Path(tmp), args.docs, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
