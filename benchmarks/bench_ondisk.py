"""On-disk IVF benchmark: a streaming build whose peak memory does not grow with the corpus.

Data: N synthetic 384-d unit vectors, generated chunk by chunk (never all in memory) from (seed, chunk index):
a mixture of Gaussian clusters on the sphere, two levels deep (100 topics x 100 anchors each; a vector is an
anchor plus isotropic noise of norm ``--spread``, then L2-normalised), so IVF partitions mean something.
Queries come from the same mixture (another seed) and are not in the corpus. The structure is cluster-shaped
only: a query's exact top-10 cosines (printed) are ~0.5, lower than real MiniLM neighbours; at 200k vectors and
IVF1024,SQ8, recall@10 at nprobe 1 / 4 / 16 was 0.66 / 0.92 / 0.99 (real+noise 1M, IVF4096: 0.74 / 0.89 / 0.94).

Index: ``IVF{nlist},SQ8`` with its inverted lists on disk (textcl.index.ondisk). ``nlist`` is the same at every
N (default 4096, about 4 sqrt(N) at 1M; state another with --nlist) and so is the training sample (64 per list),
so runs differ only in N: train once on a sample from evenly spaced chunks, fill shards of ``--shard-size``
vectors, merge their lists into one file.

Each N runs in two fresh processes: the build (train, fill, merge; its peak RSS is VmHWM from
/proc/self/status, the largest resident set the process ever had; a sampler thread also records the peak
anonymous and file-backed parts) and the queries (open the index memory-mapped; QPS over all queries at each
nprobe, warm: after one untimed pass; recall@10 against exact search, computed by streaming over the
regenerated chunks with a running top-10 per query, never all vectors in memory). QPS: all queries as one
batch, the median of 3 timings.

    python benchmarks/bench_ondisk.py --n 1000000 --n 2000000 --n 4000000   # prints the table and RSS ratio
    python benchmarks/bench_ondisk.py --n 50000 --nlist 256                   # a smoke test, seconds

Disk: SQ8 at 384 dims is 392 B per vector (+ 8 B id), twice while the shards and the merged file coexist
(~0.8 GB per million at peak). Sizes that would not fit the free space are skipped; the build time and RSS
at 10M are then extrapolated from the measured sizes (a least-squares line in N).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TOPICS, ANCHORS_PER_TOPIC = 100, 100
QUERY_STREAM = 2**40  # the queries' generator key, far from any chunk index


# ---------------------------------------------------------------- data
def anchors(seed: int, dim: int) -> np.ndarray:
    """(TOPICS * ANCHORS_PER_TOPIC, dim) unit vectors: topics, and anchors spread around each topic."""
    rng = np.random.default_rng([seed, 2**41])
    topics = rng.standard_normal((TOPICS, dim), dtype=np.float32)
    topics /= np.linalg.norm(topics, axis=1, keepdims=True)
    a = np.repeat(topics, ANCHORS_PER_TOPIC, axis=0) + 0.8 * rng.standard_normal(
        (TOPICS * ANCHORS_PER_TOPIC, dim), dtype=np.float32) / np.sqrt(dim)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def sample_mixture(rng: np.random.Generator, centres: np.ndarray, rows: int, spread: float) -> np.ndarray:
    labels = rng.integers(len(centres), size=rows)
    x = rng.standard_normal((rows, centres.shape[1]), dtype=np.float32)  # in place from here: 2 chunks of memory
    x *= spread / np.sqrt(centres.shape[1])
    x += centres[labels]
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


class Corpus:
    """N vectors in chunks of ``chunk`` rows; chunk c is a pure function of (seed, c)."""

    def __init__(self, n: int, dim: int, chunk: int, seed: int, spread: float):
        self.n, self.dim, self.chunk, self.seed, self.spread = n, dim, chunk, seed, spread
        self.n_chunks = -(-n // chunk)
        self.centres = anchors(seed, dim)

    def chunk_at(self, c: int) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = c * self.chunk, min((c + 1) * self.chunk, self.n)
        x = sample_mixture(np.random.default_rng([self.seed, c]), self.centres, hi - lo, self.spread)
        return np.arange(lo, hi, dtype=np.int64), x

    def chunks(self, c0: int = 0, c1: int | None = None):
        for c in range(c0, self.n_chunks if c1 is None else c1):
            yield self.chunk_at(c)

    def queries(self, nq: int) -> np.ndarray:
        return sample_mixture(np.random.default_rng([self.seed, QUERY_STREAM]), self.centres, nq, self.spread)

    def train_sample(self, m: int) -> np.ndarray:
        """``m`` rows from evenly spaced chunks (the first rows of each; chunks are i.i.d. by construction)."""
        k = min(self.n_chunks, max(1, -(-m // self.chunk)))
        picks = np.unique(np.linspace(0, self.n_chunks - 1, k).round().astype(int))
        per = -(-m // len(picks))
        out = np.empty((m, self.dim), np.float32)
        for j, c in enumerate(picks):  # one generated chunk alive at a time
            rows = out[j * per : (j + 1) * per]
            rows[:] = self.chunk_at(int(c))[1][: len(rows)]
        return out


# ---------------------------------------------------------------- memory
def status_kb(*keys: str) -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            name, _, value = line.partition(":")
            if name in keys:
                out[name] = int(value.split()[0])
    return out


class PeakSampler:
    """Polls RssAnon and RssFile (kB) every ``every`` seconds and keeps their maxima."""

    def __init__(self, every: float = 0.05):
        self.every, self.peak = every, {"RssAnon": 0, "RssFile": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _poll(self):
        for k, v in status_kb("RssAnon", "RssFile").items():
            self.peak[k] = max(self.peak[k], v)

    def _run(self):
        while not self._stop.is_set():
            self._poll()
            self._stop.wait(self.every)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._poll()


def mib(kb: int) -> float:
    return round(kb / 1024, 1)


def disk_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


# ---------------------------------------------------------------- the two child processes
def child_build(args) -> dict:
    import faiss

    from textcl.index import ondisk

    faiss.omp_set_num_threads(args.threads)
    corpus = Corpus(args.size, args.dim, args.chunk, args.seed, args.spread)
    work = Path(args.workdir) / f"n{args.size}"
    shutil.rmtree(work, ignore_errors=True)
    (work / "shards").mkdir(parents=True)
    factory = f"IVF{args.nlist},SQ8"
    row = {"n": args.size, "factory": factory, "baseline_rss_mib": mib(status_kb("VmRSS")["VmRSS"])}
    with PeakSampler() as sampler:
        t0 = time.perf_counter()
        trained = work / "shards" / "trained.faiss"
        m = min(args.size, args.train or 64 * args.nlist)
        ondisk.train_ondisk(factory, corpus.train_sample(m), trained)
        t1 = time.perf_counter()
        per_shard = -(-args.shard_size // args.chunk)  # whole chunks
        shards = []
        for s, c0 in enumerate(range(0, corpus.n_chunks, per_shard)):
            shards.append(work / "shards" / f"shard-{s:05d}.faiss")
            ondisk.fill_shard(trained, corpus.chunks(c0, min(c0 + per_shard, corpus.n_chunks)), shards[-1])
        t2 = time.perf_counter()
        shard_disk = disk_bytes(work / "shards")
        ntotal = ondisk.merge_shards(trained, shards, work / "index")
        t3 = time.perf_counter()
    peak_disk = shard_disk + disk_bytes(work / "index")
    shutil.rmtree(work / "shards")
    assert ntotal == args.size, (ntotal, args.size)
    row.update(train_n=m, shards=len(shards), train_s=t1 - t0, fill_s=t2 - t1, merge_s=t3 - t2, build_s=t3 - t0,
               peak_rss_mib=mib(status_kb("VmHWM")["VmHWM"]),
               ru_maxrss_mib=mib(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss),
               peak_anon_mib=mib(sampler.peak["RssAnon"]), peak_file_mib=mib(sampler.peak["RssFile"]),
               disk_bytes=disk_bytes(work / "index"), peak_disk_bytes=peak_disk)
    return row


def child_query(args) -> dict:
    import faiss

    from textcl.index import ondisk

    faiss.omp_set_num_threads(args.threads)
    corpus = Corpus(args.size, args.dim, args.chunk, args.seed, args.spread)
    folder = Path(args.workdir) / f"n{args.size}" / "index"
    q = corpus.queries(args.queries)
    index = ondisk.read_ondisk(folder)
    ivf = faiss.extract_index_ivf(index)
    found, qps = {}, {}
    for nprobe in args.nprobe:
        ivf.nprobe = nprobe
        index.search(q, 10)  # untimed: pages the probed lists in
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            _, found[nprobe] = index.search(q, 10)
            times.append(time.perf_counter() - t0)
        qps[nprobe] = len(q) / float(np.median(times))
    query_rss = mib(status_kb("VmHWM")["VmHWM"])
    # exact top-10, streaming over the regenerated chunks with a running heap per query
    t0 = time.perf_counter()
    heap = faiss.ResultHeap(len(q), 10, keep_max=True)
    for ids, x in corpus.chunks():
        d, i = faiss.knn(q, x, 10, metric=faiss.METRIC_INNER_PRODUCT)
        heap.add_result(d, np.where(i >= 0, ids[np.maximum(i, 0)], -1))
    heap.finalize()
    exact_s = time.perf_counter() - t0
    recall = {p: float(np.mean([len(set(f) & set(e)) / 10 for f, e in zip(found[p], heap.I)])) for p in args.nprobe}
    return {"recall@10": recall, "qps": qps, "query_peak_rss_mib": query_rss, "exact_s": exact_s,
            "exact_top1_cos": float(heap.D[:, 0].mean()), "exact_top10_cos": float(heap.D[:, 9].mean())}


# ---------------------------------------------------------------- the parent
def run_child(mode: str, n: int, args) -> dict:
    out = Path(args.workdir) / f"n{n}.{mode}.json"
    cmd = [sys.executable, __file__, f"--_{mode}", str(n), "--_out", str(out), "--nlist", str(args.nlist),
           "--dim", str(args.dim), "--chunk", str(args.chunk), "--shard-size", str(args.shard_size),
           "--seed", str(args.seed), "--spread", str(args.spread), "--queries", str(args.queries),
           "--threads", str(args.threads), "--workdir", str(args.workdir)]
    cmd += [f"--train={args.train}"] if args.train else []
    for p in args.nprobe:
        cmd += ["--nprobe", str(p)]
    subprocess.run(cmd, check=True)
    return json.loads(out.read_text())


def fit_line(xs, ys, at):
    slope, intercept = np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)
    return float(slope * at + intercept)


def report(rows: list[dict], args) -> None:
    print(f"\nIVF{args.nlist},SQ8 on disk, dim {args.dim}, {args.threads} threads; train on "
          f"{rows[0]['train_n']:,} vectors; shards of {args.shard_size:,}; {args.queries} queries")
    head = (f"{'N':>11} {'shards':>6} {'train s':>8} {'fill s':>8} {'merge s':>8} {'build s':>8} "
            f"{'peak RSS':>9} {'anon':>7} {'file':>7} {'disk GB':>8}")
    print(head + "".join(f" {'R@10/np' + str(p):>11} {'QPS':>7}" for p in args.nprobe))
    for r in rows:
        line = (f"{r['n']:>11,} {r['shards']:>6} {r['train_s']:>8.1f} {r['fill_s']:>8.1f} {r['merge_s']:>8.1f} "
                f"{r['build_s']:>8.1f} {r['peak_rss_mib']:>7.0f}Mi {r['peak_anon_mib']:>5.0f}Mi "
                f"{r['peak_file_mib']:>5.0f}Mi {r['disk_bytes'] / 1e9:>8.2f}")
        print(line + "".join(f" {r['recall@10'][str(p)]:>11.3f} {r['qps'][str(p)]:>7.0f}" for p in args.nprobe))
    print("(peak RSS: the build process's VmHWM, MiB; anon/file: peaks of its anonymous and file-backed parts)")
    print("exact top-1 / top-10 cosine, mean over queries: " + ", ".join(
        f"{r['n']:,}: {r['exact_top1_cos']:.3f} / {r['exact_top10_cos']:.3f}" for r in rows))
    if len(rows) > 1:
        small, large = rows[0], rows[-1]
        ratio = large["peak_rss_mib"] / small["peak_rss_mib"]
        print(f"peak RSS {large['n']:,} / {small['n']:,}: {ratio:.2f}x for {large['n'] / small['n']:.0f}x the "
              f"vectors (target <= 1.5x): {'met' if ratio <= 1.5 else 'NOT met'}")
        if rows[-1]["n"] < 10_000_000:
            ns = [r["n"] for r in rows]
            print(f"extrapolated to 10,000,000 (least-squares line over {len(rows)} sizes): build "
                  f"{fit_line(ns, [r['build_s'] for r in rows], 1e7):.0f} s, peak RSS "
                  f"{fit_line(ns, [r['peak_rss_mib'] for r in rows], 1e7):.0f} MiB, disk "
                  f"{fit_line(ns, [r['disk_bytes'] for r in rows], 1e7) / 1e9:.1f} GB")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, action="append", help="corpus sizes (default 1M, 2M, 4M)")
    p.add_argument("--nlist", type=int, default=4096, help="IVF lists, the same at every N (default 4096)")
    p.add_argument("--train", type=int, help="training vectors (default 64 per list)")
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--chunk", type=int, default=50_000, help="vectors generated at a time (default 50000)")
    p.add_argument("--shard-size", type=int, default=500_000, help="vectors per shard (default 500000)")
    p.add_argument("--spread", type=float, default=1.0, help="noise norm around an anchor (default 1.0)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--nprobe", type=int, action="append", help="default 1, 4, 16, 64")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--workdir", default=str(ROOT / "benchmarks" / ".cache" / "ondisk"))
    p.add_argument("--keep", action="store_true", help="keep each index folder (default: removed after its row)")
    p.add_argument("--json", help="write the rows as JSON")
    p.add_argument("--_build", type=int, dest="build_n", help=argparse.SUPPRESS)
    p.add_argument("--_query", type=int, dest="query_n", help=argparse.SUPPRESS)
    p.add_argument("--_out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.nprobe = args.nprobe or [1, 4, 16, 64]
    if args.build_n or args.query_n:  # a child process
        args.size = args.build_n or args.query_n
        row = child_build(args) if args.build_n else child_query(args)
        Path(args._out).write_text(json.dumps(row))
        return 0

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in sorted(args.n or [1_000_000, 2_000_000, 4_000_000]):
        need = 2 * n * (args.dim + 8) * 1.05  # shards and merged lists coexist during the merge
        free = shutil.disk_usage(work).free
        if need > free:
            print(f"skipping N = {n:,}: needs ~{need / 1e9:.1f} GB of disk, {free / 1e9:.1f} GB free")
            continue
        print(f"N = {n:,}: building ...", flush=True)
        row = run_child("build", n, args)
        print(f"N = {n:,}: built in {row['build_s']:.1f} s, peak RSS {row['peak_rss_mib']:.0f} MiB; querying ...",
              flush=True)
        row.update(run_child("query", n, args))
        rows.append(row)
        if not args.keep:
            shutil.rmtree(work / f"n{n}", ignore_errors=True)
    if rows:
        report(rows, args)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
