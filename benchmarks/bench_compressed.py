"""Compressed vectors in SearchIndex: binary and int8 (SQ8) first passes, with and without float rescoring.

For Flat, sq8, sq8+rescore (r = 2, 4, 10), binary and binary+rescore (r = 4, 10, 20, 40), through
``textcl.index.SearchIndex`` (saved, then loaded, so the float vectors are read from the folder's memory-mapped
``vectors.f32``): bytes per vector in RAM (codes + id map, as ``SearchIndex.info()`` counts them: the binary
index uses IndexBinaryIDMap, 8 B; the float ones IndexIDMap2, 8 B + a measured ~43 B reverse hash map) and its
ratio to float32 Flat, bytes per vector on disk, recall@10 and nDCG@10 retention against exact float search,
and batched QPS (median of --repeat).

nDCG@10 retention: the exact top 10 of each query is the graded relevance, by rank (rank 1 has gain 10, rank 10
gain 1, everything else 0); a result list's nDCG@10 against that ideal, averaged over queries (exact = 1.0).
No BEIR qrels: this measures how much of exact search a compressed index keeps, not retrieval quality.

One index per first pass: ``sq8`` and ``binary`` are the ``SQ8+rescore`` / ``binary+rescore`` indexes
searched with ``rescore=0`` (the first pass's own scores), identical to building ``sq8`` / ``binary``.
QPS is measured with the vector file in the OS page cache (it was just written).

Data
  * default: the cached real MiniLM passage embeddings (``bench_index.py --prepare 100000``) and title queries;
    ``--n 1000000`` adds bench_index's "real + noise" vectors;
  * ``--vectors FILE.npy --holdout 500``: any (n, d) file, its last 500 rows as queries (a smoke test without
    the model);
  * ``--random N``: N random unit vectors in ``--dim`` dimensions (smoke test only; random vectors are far
    harder for binary codes than real embeddings).

    python benchmarks/bench_compressed.py                       # 100k real, 500 title queries
    python benchmarks/bench_compressed.py --n 100000 --n 1000000
    python benchmarks/bench_compressed.py --vectors benchmarks/.cache/serve/demo-10033/vectors.npy --holdout 500
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SQ8_R = (2, 4, 10)
BINARY_R = (4, 10, 20, 40)
TARGETS = {"binary": (16.0, 0.95), "sq8": (None, 0.99)}  # memory ratio >=, recall@10 >= (issue 10)


def _median_time(fn, repeat: int) -> float:
    fn()  # warm-up: page cache, FAISS threads
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def recall_at_10(got: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a[:10]) & set(b[:10])) / 10 for a, b in zip(got, exact)]))


def ndcg_retention(got: np.ndarray, exact: np.ndarray) -> float:
    """Mean nDCG@10 of ``got`` with the exact top 10 as graded relevance (gain 10 - rank)."""
    discounts = 1.0 / np.log2(np.arange(2, 12))
    gains = np.arange(10, 0, -1, dtype=np.float64)
    ideal = float((gains * discounts).sum())
    out = []
    for a, b in zip(got, exact):
        rel = {int(doc): gains[r] for r, doc in enumerate(b[:10])}
        out.append(sum(rel.get(int(doc), 0.0) * discounts[r] for r, doc in enumerate(a[:10])) / ideal)
    return float(np.mean(out))


def load_data(args) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """[(label, corpus (n, d), queries (nq, d))] float32 unit rows."""
    if args.random:
        rng = np.random.default_rng(0)
        x = rng.standard_normal((args.random + args.queries, args.dim)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return [(f"{args.random:,} random {args.dim}-d", x[: args.random], x[args.random :])]
    if args.vectors:
        x = np.load(args.vectors).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        h = args.holdout
        return [(f"{len(x) - h:,} from {Path(args.vectors).name}, last {h} rows as queries", x[:-h], x[-h:])]
    sys.path.insert(0, str(HERE))
    import bench_index as bi

    real = bi.cached_real()
    q = bi.title_queries(args.queries)
    out = []
    for n in args.n or [100_000]:
        x = bi.real_plus_noise(real, n)
        out.append((f"N = {n:,} ({min(n, len(real)):,} real + {max(0, n - len(real)):,} real+noise), "
                    f"{len(q)} title queries", x, q))
    return out


def bench(x: np.ndarray, q: np.ndarray, args) -> list[dict]:
    sys.path.insert(0, str(HERE.parent))
    from textcl.index import SearchIndex

    n, d = x.shape
    texts = [str(i) for i in range(n)]
    rows: list[dict] = []
    tmp = Path(tempfile.mkdtemp(prefix="bench-compressed-", dir=args.tmp))
    float_bytes = None
    exact = None
    try:
        plan = [("Flat", [("Flat", None)]),
                ("SQ8+rescore", [("sq8", 0)] + [(f"sq8+rescore{r}", r) for r in SQ8_R]),
                ("binary+rescore", [("binary", 0)] + [(f"binary+rescore{r}", r) for r in BINARY_R])]
        for factory, settings in plan:
            t0 = time.perf_counter()
            built = SearchIndex.build(texts, embeddings=x, factory=factory)
            built.save(tmp / factory)
            built.close()
            index = SearchIndex.load(tmp / factory)
            build_s = time.perf_counter() - t0
            info = index.info()
            for name, r in settings:
                kw = {} if r is None else {"rescore": r}
                _, ids = index.search_vectors(q, 10, **kw)
                if exact is None:
                    exact, float_bytes = ids, info["memory_bytes_per_vector"]
                qps = len(q) / _median_time(lambda: index.search_vectors(q, 10, **kw), args.repeat)
                mem = info["memory_bytes_per_vector"]
                disk = info["disk_bytes_per_vector"] if r != 0 else info["disk_bytes_per_vector"] - 4 * d
                rows.append({"config": name, "build_s": build_s, "ram_bytes_per_vec": mem,
                             "ram_ratio_vs_float32": float_bytes / mem, "disk_bytes_per_vec": disk,
                             "recall@10": recall_at_10(ids, exact), "ndcg@10_retention": ndcg_retention(ids, exact),
                             "qps_batch": qps})
                r_ = rows[-1]
                print(f"  {name:<20} {mem:7.1f} B/vec RAM ({r_['ram_ratio_vs_float32']:5.1f}x less)  "
                      f"disk {disk:7.1f} B/vec  recall@10 {r_['recall@10']:.4f}  nDCG@10 ret. "
                      f"{r_['ndcg@10_retention']:.4f}  batch {qps:8.0f} q/s", flush=True)
            index.close()
            shutil.rmtree(tmp / factory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


def report(rows: list[dict], label: str) -> None:
    flat = rows[0]
    print(f"\n{label}; ratios against exact Flat (RAM: float32 + IndexIDMap2's id and reverse map, ~51 B):")
    print("| config | RAM B/vec | x less RAM | disk B/vec | recall@10 | nDCG@10 retention | QPS batch | x Flat |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['config']} | {r['ram_bytes_per_vec']:.0f} | {r['ram_ratio_vs_float32']:.1f} "
              f"| {r['disk_bytes_per_vec']:.0f} | {r['recall@10']:.4f} | {r['ndcg@10_retention']:.4f} "
              f"| {r['qps_batch']:.0f} | {r['qps_batch'] / flat['qps_batch']:.2f} |")
    for family, (ratio, recall) in TARGETS.items():
        ok = [r for r in rows if r["config"].startswith(family + "+rescore") and r["recall@10"] >= recall
              and (ratio is None or r["ram_ratio_vs_float32"] >= ratio)]
        goal = f"recall@10 >= {recall}" + (f" at >= {ratio:.0f}x less RAM" if ratio else "")
        if ok:
            best = min(ok, key=lambda r: int(r["config"].rsplit("rescore", 1)[1]))
            print(f"{family}+rescore target ({goal}): met from {best['config']} "
                  f"(recall@10 {best['recall@10']:.4f}, {best['qps_batch'] / flat['qps_batch']:.2f}x Flat's QPS)")
        else:
            print(f"{family}+rescore target ({goal}): not met by any r tried")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, action="append", help="corpus sizes from the cached real data (default 100000)")
    p.add_argument("--queries", type=int, default=500, help="title queries (or random queries with --random)")
    p.add_argument("--vectors", help="an (n, d) .npy file instead of the cached wiki embeddings")
    p.add_argument("--holdout", type=int, default=500, help="with --vectors: the last rows used as queries")
    p.add_argument("--random", type=int, metavar="N", help="N random unit vectors (smoke test)")
    p.add_argument("--dim", type=int, default=384, help="with --random")
    p.add_argument("--repeat", type=int, default=3, help="timings per measurement; the median is reported")
    p.add_argument("--tmp", help="folder for the temporary index folders (default: the system's)")
    p.add_argument("--json", help="write all rows as JSON")
    args = p.parse_args(argv)
    import faiss

    print(f"faiss threads {faiss.omp_get_max_threads()}")
    out = {}
    for label, x, q in load_data(args):
        print(f"\n{label}, d = {x.shape[1]}")
        rows = bench(x, q, args)
        report(rows, label)
        out[label] = rows
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
