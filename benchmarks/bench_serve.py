"""Serving benchmark: QPS and p50/p99 latency of ``textcl serve`` under concurrent clients, against a peer.

Servers (each a subprocess on 127.0.0.1, started and stopped here; read-only):
  * ``batched``:   ``textcl serve INDEX`` (micro-batching on: --max-batch 64, --max-wait-ms 2 unless changed)
  * ``unbatched``: ``textcl serve INDEX --no-batching`` (each request encoded and searched alone)
  * ``peer``:      what a user writes by hand: a FastAPI ``GET /search`` (sync endpoint, uvicorn's thread pool)
    calling ``SentenceTransformer.encode`` + ``sentence_transformers.util.semantic_search`` per request
    over the same vectors and texts.

Indexes (Flat, cached under ``benchmarks/.cache/serve/``):
  * ``demo``: the 10,033 packaged Wikipedia leads (``make demo``'s corpus), embedded with the packaged
    all-MiniLM-L6-v2 (a few minutes on 2 cores, once);
  * ``100k``: those real vectors followed by "real + noise" vectors up to 100,000 (``bench_index.py``'s
    method: a random real anchor plus Gaussian noise with the real PCA spectrum, scaled so that a synthetic
    vector's cosine to its anchor matches a real vector's to its nearest real neighbour), each stored with
    its anchor's text. Encoding 100k real passages takes ~25 min here, and search cost depends on N and d,
    not on where the vectors came from.

Load: single-query ``GET /search?q=TITLE&k=10`` requests (the article titles, shuffled), closed loop: each
of C clients (1, 8, 32) keeps one keep-alive connection and sends its next request when the previous answer
arrives. Each configuration runs until ``--requests`` answers or ``--duration`` seconds, after ``--warmup``
requests. The load generator is a small asyncio HTTP/1.1 client (one process; on a 2-core machine it shares
the CPU with the server, the same for every arm). Prints a table, then ratios: batched / peer and
batched / unbatched QPS, p99 against p99.

    python benchmarks/bench_serve.py                                   # everything (~15 min + first build)
    python benchmarks/bench_serve.py --indexes demo --clients 8 --requests 500
    python benchmarks/bench_serve.py --demo-docs 300 --n-large 3000 --requests 40 --duration 5   # smoke
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CACHE = HERE / ".cache" / "serve"
sys.path.insert(0, str(ROOT))


# ---------------------------------------------------------------- data
def minilm() -> str:
    from textcl.models import packaged_minilm_path

    path = packaged_minilm_path()
    if path is None:
        sys.exit("the packaged all-MiniLM-L6-v2 is not installed: make install")
    return str(path)


def demo_index(n_docs: int | None) -> tuple[Path, Path]:
    """(index folder, vectors .npy) of the first ``n_docs`` packaged leads (all when None), cached."""
    from textcl.data.wiki import wiki_leads

    leads = wiki_leads()[:n_docs] if n_docs else wiki_leads()
    folder = CACHE / f"demo-{len(leads)}"
    index_dir, vec_path = folder / "index", folder / "vectors.npy"
    if not (index_dir / "manifest.json").exists() or not vec_path.exists():
        from textcl._io import atomic_save_npy
        from textcl.index import SearchIndex
        from textcl.models import Encoder

        print(f"embedding {len(leads):,} Wikipedia leads with all-MiniLM-L6-v2 (once; cached in {folder})...",
              flush=True)
        started = time.perf_counter()
        vecs = Encoder.load(minilm()).encode([lead for _, lead in leads], batch_size=64, show_progress=True)
        atomic_save_npy(vec_path, vecs)
        index = SearchIndex.build([lead for _, lead in leads], ids=[f"wiki-{i}" for i in range(len(leads))],
                                  metadata=[{"title": t} for t, _ in leads], embeddings=vecs, model_name=minilm())
        index.save(index_dir)
        print(f"  {time.perf_counter() - started:.0f} s", flush=True)
    return index_dir, vec_path


def large_index(n: int, demo_dir: Path, demo_vecs: Path) -> tuple[Path, Path]:
    """The demo's real vectors followed by real + noise vectors up to ``n`` (see the module docstring)."""
    folder = CACHE / f"derived-{n}-from-{demo_dir.parent.name}"
    index_dir, vec_path = folder / "index", folder / "vectors.npy"
    if not (index_dir / "manifest.json").exists() or not vec_path.exists():
        from bench_index import real_plus_noise

        from textcl._io import atomic_save_npy
        from textcl.index import SearchIndex

        print(f"building the {n:,}-vector index (real + noise; cached in {folder})...", flush=True)
        real = np.load(demo_vecs)
        vecs = real_plus_noise(real, n)
        # which real vector each synthetic one is nearest to, for its text (chunked: n x n_real is large)
        anchors = np.empty(n, np.int64)
        anchors[: len(real)] = np.arange(len(real))
        for lo in range(len(real), n, 2000):
            anchors[lo : lo + 2000] = np.argmax(vecs[lo : lo + 2000] @ real.T, axis=1)
        texts, titles = _texts(demo_dir)
        atomic_save_npy(vec_path, vecs)
        index = SearchIndex.build([texts[a] for a in anchors], ids=[f"v{i}" for i in range(n)],
                                  metadata=[{"title": titles[a]} for a in anchors], embeddings=vecs,
                                  model_name=minilm())
        index.save(index_dir)
    return index_dir, vec_path


def _texts(index_dir: Path) -> tuple[list[str], list[str]]:
    """Texts and titles of a saved index, in integer-id order (the order of its vectors here)."""
    with sqlite3.connect(f"file:{index_dir / 'docs.sqlite'}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT text, json_extract(metadata, '$.title') FROM docs ORDER BY int_id").fetchall()
    return [r[0] for r in rows], [r[1] or "" for r in rows]


def _ids(index_dir: Path) -> list[str]:
    with sqlite3.connect(f"file:{index_dir / 'docs.sqlite'}?mode=ro", uri=True) as conn:
        return [r[0] for r in conn.execute("SELECT doc_id FROM docs ORDER BY int_id")]


def query_paths(k: int, seed: int = 0) -> list[str]:
    from textcl.data.wiki import wiki_leads

    titles = [t for t, _ in wiki_leads()]
    order = np.random.default_rng(seed).permutation(len(titles))
    return [f"/search?{urllib.parse.urlencode({'q': titles[i], 'k': k})}" for i in order]


# ---------------------------------------------------------------- the peer server
def run_peer(index_dir: str, vectors: str, port: int, threads: int) -> None:
    """The hand-written service: encode + semantic_search per request, in FastAPI's thread pool."""
    import torch
    import uvicorn
    from fastapi import FastAPI
    from sentence_transformers import SentenceTransformer, util

    if threads:
        torch.set_num_threads(threads)

    model = SentenceTransformer(minilm(), device="cpu")
    corpus = torch.from_numpy(np.load(vectors))
    ids, texts = _ids(Path(index_dir)), _texts(Path(index_dir))[0]
    app = FastAPI()

    @app.get("/search")
    def search(q: str, k: int = 10):
        emb = model.encode([q], convert_to_tensor=True, normalize_embeddings=True)
        hits = util.semantic_search(emb, corpus, top_k=k)[0]
        return {"results": [{"query": q, "hits": [{"id": ids[h["corpus_id"]], "score": h["score"],
                                                   "text": texts[h["corpus_id"]]} for h in hits]}]}

    @app.get("/health")
    def health():
        return {"status": "ok"}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


# ---------------------------------------------------------------- servers
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(arm: str, index_dir: Path, vectors: Path, args) -> tuple[subprocess.Popen, int]:
    port = free_port()
    if arm == "peer":
        cmd = [sys.executable, __file__, "--peer-server", str(index_dir), str(vectors), str(port), str(args.threads or 0)]
    else:
        cmd = [sys.executable, "-m", "textcl.cli", "serve", str(index_dir), "--port", str(port), "--model", minilm(),
               "--log-level", "warning", "--max-batch", str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms),
               "--max-k", str(max(args.k, 1000))]
        if arm == "unbatched":
            cmd.append("--no-batching")
        if args.threads:
            cmd += ["--threads", str(args.threads)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"the {arm} server exited with {proc.returncode}")
        try:
            status, _ = asyncio.run(_one("/health", port))
            if status == 200:
                return proc, port
        except OSError:
            pass
        time.sleep(0.2)
    proc.kill()
    sys.exit(f"the {arm} server did not start within 300 s")


def stop_server(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# ---------------------------------------------------------------- load generation
async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = bytearray()
        while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
            body += await reader.readexactly(size + 2)
            del body[-2:]
        await reader.readuntil(b"\r\n")
    else:
        body = await reader.readexactly(int(headers.get("content-length", 0)))
    return status, bytes(body), headers.get("connection", "").lower() == "close"


async def _one(path: str, port: int) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        status, body, _ = await _read_response(reader)
        return status, body
    finally:
        writer.close()


async def _load(port: int, paths: list[str], clients: int, requests: int, duration: float) -> dict:
    """Closed loop: ``clients`` connections, each sending its next request when answered."""
    latencies: list[float] = []
    errors = 0
    issued = 0
    deadline = time.perf_counter() + duration

    async def client() -> None:
        nonlocal issued, errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while issued < requests and time.perf_counter() < deadline:
                path = paths[issued % len(paths)]
                issued += 1
                started = time.perf_counter()
                writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
                status, _, close = await _read_response(reader)
                if status == 200:
                    latencies.append(time.perf_counter() - started)
                else:
                    errors += 1
                if close:
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    wall = time.perf_counter() - started
    ms = np.array(latencies) * 1000
    return {"clients": clients, "requests": len(latencies), "errors": errors, "seconds": round(wall, 2),
            "qps": round(len(latencies) / wall, 1) if wall else 0.0,
            "p50_ms": round(float(np.percentile(ms, 50)), 2) if len(ms) else None,
            "p99_ms": round(float(np.percentile(ms, 99)), 2) if len(ms) else None}


def batching_stats(port: int) -> tuple[int, int] | None:
    status, body = asyncio.run(_one("/info", port))
    if status != 200:
        return None
    info = json.loads(body).get("batching")
    return (info["batches"], info["queries"]) if info else None


def bench_arm(arm: str, index_dir: Path, vectors: Path, paths: list[str], args) -> list[dict]:
    proc, port = start_server(arm, index_dir, vectors, args)
    rows = []
    try:
        status, body = asyncio.run(_one(paths[0], port))
        if status != 200 or not json.loads(body)["results"][0]["hits"]:
            sys.exit(f"{arm}: a sanity query failed ({status}): {body[:200]!r}")
        asyncio.run(_load(port, paths[1:], 4, args.warmup, args.duration))
        offset = 1 + args.warmup
        for clients in args.clients:
            before = batching_stats(port) if arm != "peer" else None
            row = asyncio.run(_load(port, paths[offset:], clients, args.requests, args.duration))
            offset += row["requests"] + row["errors"]
            after = batching_stats(port) if arm != "peer" else None
            if before and after and after[0] > before[0]:
                row["mean_batch"] = round((after[1] - before[1]) / (after[0] - before[0]), 2)
            row["arm"] = arm
            rows.append(row)
            print(f"  {arm:<10} {clients:>3} clients: {row['qps']:>7.1f} QPS  p50 {row['p50_ms']} ms  "
                  f"p99 {row['p99_ms']} ms  ({row['requests']} answers, {row['errors']} errors"
                  f"{', mean batch ' + str(row['mean_batch']) if 'mean_batch' in row else ''})", flush=True)
    finally:
        stop_server(proc)
    return rows


# ---------------------------------------------------------------- report
def report(name: str, n: int, rows: list[dict]) -> None:
    by = {(r["arm"], r["clients"]): r for r in rows}
    print(f"\n{name} ({n:,} vectors, k = {ARGS.k}): QPS and latency")
    print(f"{'arm':<10} {'clients':>7} {'QPS':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} {'batch':>6}")
    for r in rows:
        print(f"{r['arm']:<10} {r['clients']:>7} {r['qps']:>8.1f} {r['p50_ms'] or 0:>8.2f} {r['p99_ms'] or 0:>8.2f} "
              f"{r['errors']:>6} {r.get('mean_batch', ''):>6}")
    for clients in ARGS.clients:
        b, u, p = (by.get((arm, clients)) for arm in ("batched", "unbatched", "peer"))
        parts = []
        if b and p and p["qps"]:
            parts.append(f"batched/peer QPS {b['qps'] / p['qps']:.2f}x, p99 {b['p99_ms']} vs {p['p99_ms']} ms")
        if b and u and u["qps"]:
            parts.append(f"batched/unbatched QPS {b['qps'] / u['qps']:.2f}x, p99 {b['p99_ms']} vs {u['p99_ms']} ms")
        if parts:
            print(f"  {clients:>2} clients: " + "; ".join(parts))
    b8, p8 = by.get(("batched", 8)), by.get(("peer", 8))
    if b8 and p8 and p8["qps"]:
        ok = b8["qps"] >= 2 * p8["qps"] and b8["p99_ms"] <= p8["p99_ms"]
        print(f"  target (8 clients: batched >= 2x peer QPS at a p99 no worse): {'met' if ok else 'NOT met'}")
    if n >= 100_000:
        for clients in ARGS.clients:
            if b := by.get(("batched", clients)):
                print(f"  target (p99 <= 100 ms, k = 10, {n:,} vectors), {clients} clients: "
                      f"{'met' if b['p99_ms'] is not None and b['p99_ms'] <= 100 else 'NOT met'} ({b['p99_ms']} ms)")


ARGS: argparse.Namespace


def main(argv: list[str] | None = None) -> int:
    global ARGS
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--peer-server":
        run_peer(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
        return 0
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--indexes", default="demo,100k", help="comma-separated: demo, 100k (default both)")
    p.add_argument("--arms", default="batched,unbatched,peer", help="comma-separated (default all three)")
    p.add_argument("--clients", default="1,8,32", help="concurrent clients (default 1,8,32)")
    p.add_argument("--requests", type=int, default=2000, help="answers per configuration at most (default 2000)")
    p.add_argument("--duration", type=float, default=30.0, help="seconds per configuration at most (default 30)")
    p.add_argument("--warmup", type=int, default=50, help="requests before measuring, per server (default 50)")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--demo-docs", type=int, help="only the first N leads (default all 10,033; for smoke runs; "
                   ">= 500 with the 100k index)")
    p.add_argument("--n-large", type=int, default=100_000, help="vectors in the large index (default 100000)")
    p.add_argument("--max-batch", type=int, default=64, help="textcl serve --max-batch (default 64)")
    p.add_argument("--max-wait-ms", type=float, default=2.0, help="textcl serve --max-wait-ms (default 2)")
    p.add_argument("--threads", type=int, help="torch threads in every server (default: torch's, one per core)")
    p.add_argument("--json", help="also write every row to this JSON file")
    ARGS = args = p.parse_args(argv)
    args.clients = [int(c) for c in args.clients.split(",")]
    if "100k" in args.indexes.split(",") and args.demo_docs is not None and args.demo_docs < 500:
        p.error("--demo-docs: the large index is derived from at least 500 real vectors")
    arms = args.arms.split(",")
    import faiss
    import torch

    print(f"cpus {os.cpu_count()}, torch threads {torch.get_num_threads()}, faiss threads "
          f"{faiss.omp_get_max_threads()}; k = {args.k}; per configuration at most {args.requests} answers or "
          f"{args.duration:g} s", flush=True)
    demo_dir, demo_vecs = demo_index(args.demo_docs)
    paths = query_paths(args.k)
    out = {}
    for name in args.indexes.split(","):
        index_dir, vecs = (demo_dir, demo_vecs) if name == "demo" else large_index(args.n_large, demo_dir, demo_vecs)
        n = len(np.load(vecs, mmap_mode="r"))
        print(f"\n== {name}: {n:,} vectors ({index_dir})", flush=True)
        rows = [row for arm in arms for row in bench_arm(arm, index_dir, vecs, paths, args)]
        report(name, n, rows)
        out[name] = {"n": n, "rows": rows}
    if args.json:
        from textcl._io import atomic_write_json

        atomic_write_json(args.json, {"args": {k: v for k, v in vars(args).items()}, "results": out})
    return 0


if __name__ == "__main__":
    sys.exit(main())
