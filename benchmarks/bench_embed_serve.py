"""Embedding service benchmark: ``textcl serve --model`` against infinity and a hand-written FastAPI endpoint.

Servers (subprocesses on 127.0.0.1, all started first: textcl's alone, one after another, then the peers side
by side; then measured cell by cell, one after another, so that each cell compares them under the same
background load), each serving the packaged all-MiniLM-L6-v2
through ``POST /v1/embeddings`` (OpenAI's schema, ``encoding_format: float``):

  * ``textcl``:   ``textcl serve --model minilm=MODEL`` (micro-batching, its default threads, and its default
    ``--precision auto``: bf16 autocast where it measured faster on this machine); ``textcl-fp32`` adds
    ``--precision fp32``;
  * ``infinity``: ``infinity_emb v2 --engine torch --device cpu`` (infinity-emb, the open-source
    high-throughput embedding server; its defaults, fp32 on a CPU), and ``infinity-bf16`` with
    ``--dtype bfloat16`` (its weights cast to bf16), in its own virtual environment
    (``benchmarks/.cache/venvs/infinity``: it pins numpy < 2 and sentence-transformers < 4; ``--setup``
    installs it from the package registry, torch stays the pinned 2.13.0 CPU wheel);
  * ``peer``:     what a user writes by hand: a FastAPI endpoint (sync, uvicorn's thread pool) calling
    ``SentenceTransformer.encode(texts, normalize_embeddings=True)`` per request.

Load: a closed loop of C clients (each a keep-alive connection that sends its next request when answered),
each request holding T texts, short (10 words) or long (200 words, over the model's 256 tokens) cut from the
packaged Wikipedia leads. A cell issues requests for ``--duration`` seconds, then waits for those in flight
(at most ``--drain`` seconds). Cells: C in 1, 8, 32 with T in 1, 32 for short texts; T = 1 at C in 1, 8, 32 and
T = 32 at C = 1 for long ones (32 long texts take ~4 s on one core here: 8 clients of them would hold a cell for
half a minute). The whole run stops starting cells once ``--budget`` seconds have passed.

Each server's vectors for a fixed set of short and long texts are compared with textcl's ``Encoder.encode``
(cosine). Prints requests/s, texts/s, p50/p99 latency per cell and arm, the ratios of textcl's texts/s to each
peer's, and the issue's targets (>= 1.2x infinity's texts/s at 8 and 32 clients with a p99 no worse, both
lengths; a lone client's p50 no worse than infinity's).

    python benchmarks/bench_embed_serve.py --setup      # infinity's environment (once)
    python benchmarks/bench_embed_serve.py              # the grid: about 5 minutes on 2 cores
    python benchmarks/bench_embed_serve.py --arms textcl,peer --duration 2 --budget 120   # smoke
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from pydantic import BaseModel

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from bench_serve import _read_response, free_port, minilm, stop_server  # noqa: E402

VENV = HERE / ".cache" / "venvs" / "infinity"
INFINITY = "infinity-emb[server,torch]==0.0.78"
NAME = "minilm"
CELLS = [("short", 1, 1), ("short", 1, 8), ("short", 1, 32), ("short", 32, 1), ("short", 32, 8), ("short", 32, 32),
         ("long", 1, 1), ("long", 1, 8), ("long", 1, 32), ("long", 32, 1)]  # (length, texts, clients)
QUIET_ENV = {"TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "1",
             "INFINITY_ANONYMOUS_USAGE_STATS": "0"}


# ---------------------------------------------------------------- infinity's environment
def setup() -> None:
    if (VENV / ".ready").exists():
        print(f"{VENV}: ready")
        return
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    pip = [str(VENV / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run(pip + ["torch==2.13.0"], check=True)
    subprocess.run(pip + [INFINITY, "torch==2.13.0"], check=True)
    (VENV / ".ready").touch()
    print(f"{VENV}: installed {INFINITY}")


# ---------------------------------------------------------------- texts
def texts(length: str, n: int, seed: int) -> list[str]:
    """``n`` texts of 10 (short) or 200 (long) words from the packaged Wikipedia leads, from place ``seed``."""
    from textcl.data.wiki import wiki_leads

    words = " ".join(lead for _, lead in wiki_leads()).split()
    size = 10 if length == "short" else 200
    starts = np.random.default_rng(seed).integers(0, len(words) - size, n)
    return [" ".join(words[s : s + size]) for s in starts]


# ---------------------------------------------------------------- the hand-written peer
class PeerRequest(BaseModel):  # at module level: FastAPI resolves the endpoint's annotation here
    input: str | list[str]
    model: str | None = None
    encoding_format: str = "float"


def run_peer(model_path: str, port: int) -> None:
    import uvicorn
    from fastapi import FastAPI
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(model_path, device="cpu")
    app = FastAPI()

    @app.post("/v1/embeddings")
    def embeddings(req: PeerRequest):
        batch = [req.input] if isinstance(req.input, str) else req.input
        vecs = model.encode(batch, normalize_embeddings=True)
        return {"object": "list", "model": NAME,
                "data": [{"object": "embedding", "index": i, "embedding": v.tolist()} for i, v in enumerate(vecs)],
                "usage": {"prompt_tokens": 0, "total_tokens": 0}}

    @app.get("/health")
    def health():
        return {"status": "ok"}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


# ---------------------------------------------------------------- servers
def command(arm: str, port: int, args) -> list[str]:
    if arm == "textcl":
        cmd = [sys.executable, "-m", "textcl.cli", "serve", "--model", f"{NAME}={minilm()}", "--port", str(port),
               "--log-level", "warning"]
        return cmd + (["--threads", str(args.threads)] if args.threads else [])
    if arm == "textcl-fp32":
        return command("textcl", port, args) + ["--precision", "fp32"]
    if arm in ("infinity", "infinity-bf16"):
        return [str(VENV / "bin" / "infinity_emb"), "v2", "--model-id", minilm(), "--served-model-name", NAME,
                "--host", "127.0.0.1", "--port", str(port), "--url-prefix", "/v1", "--engine", "torch",
                "--device", "cpu", "--log-level", "warning"] + (["--dtype", "bfloat16"] if arm == "infinity-bf16" else [])
    return [sys.executable, __file__, "--peer-server", minilm(), str(port)]


def start(arm: str, args) -> tuple[subprocess.Popen, int]:
    port = free_port()
    log = open(HERE / ".cache" / f"embed-serve-{arm}.log", "wb")
    proc = subprocess.Popen(command(arm, port, args), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, **QUIET_ENV})
    return proc, port


def wait_healthy(arm: str, proc: subprocess.Popen, port: int, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"the {arm} server exited with {proc.returncode}; see benchmarks/.cache/embed-serve-{arm}.log")
        try:
            if asyncio.run(_request(port, "GET", "/health"))[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.3)
    proc.kill()
    sys.exit(f"the {arm} server did not start within {timeout:.0f} s")


def served_precision(arm: str, port: int) -> str:
    """textcl's arms: the precision ``--precision`` resolved to, as ``GET /v1/models`` reports it."""
    if not arm.startswith("textcl"):
        return ""
    status, body = asyncio.run(_request(port, "GET", "/v1/models"))
    cards = json.loads(body).get("data", []) if status == 200 else []
    return f"; serving {cards[0].get('precision')}" if cards else ""


# ---------------------------------------------------------------- HTTP
def _post(port: int, body: bytes) -> bytes:
    return (f"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


async def _request(port: int, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        if method == "POST":
            writer.write(_post(port, body))
        else:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        status, answer, _ = await _read_response(reader)
        return status, answer
    finally:
        writer.close()


def embed(port: int, batch: list[str]) -> np.ndarray:
    status, answer = asyncio.run(_request(port, "POST", "", json.dumps({"input": batch, "model": NAME}).encode()))
    if status != 200:
        raise RuntimeError(f"HTTP {status}: {answer[:300]!r}")
    data = sorted(json.loads(answer)["data"], key=lambda d: d["index"])
    return np.array([d["embedding"] for d in data], dtype=np.float32)


async def _load(port: int, bodies: list[bytes], n_texts: int, clients: int, duration: float, drain: float) -> dict:
    """Closed loop: ``clients`` connections each sending its next request when answered, for ``duration`` s."""
    latencies: list[float] = []
    errors = 0
    issued = 0
    stop_at = time.perf_counter() + duration

    async def client() -> None:
        nonlocal issued, errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.perf_counter() < stop_at:
                body = bodies[issued % len(bodies)]
                issued += 1
                started = time.perf_counter()
                writer.write(_post(port, body))
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
    tasks = [asyncio.ensure_future(client()) for _ in range(clients)]
    done, pending = await asyncio.wait(tasks, timeout=duration + drain)
    for task in pending:
        task.cancel()
    wall = time.perf_counter() - started
    ms = np.array(latencies) * 1000
    return {"requests": len(latencies), "errors": errors, "unfinished": len(pending), "seconds": round(wall, 2),
            "rps": round(len(latencies) / wall, 2), "texts_s": round(len(latencies) * n_texts / wall, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 1) if len(ms) else None,
            "p99_ms": round(float(np.percentile(ms, 99)), 1) if len(ms) else None}


# ---------------------------------------------------------------- report
def ratios(rows: list[dict], arms: list[str]) -> list[str]:
    by = {(r["arm"], r["length"], r["texts"], r["clients"]): r for r in rows}
    lines, met = [], {"infinity": [], "infinity-bf16": []}
    for length, n, clients in CELLS:
        mine = by.get(("textcl", length, n, clients))
        if not mine or not mine["texts_s"]:
            continue
        parts = []
        for peer in (a for a in arms if a != "textcl"):
            other = by.get((peer, length, n, clients))
            if other and other["texts_s"]:
                parts.append(f"/{peer} {mine['texts_s'] / other['texts_s']:.2f}x texts/s, p50 {mine['p50_ms']} vs "
                             f"{other['p50_ms']} ms, p99 {mine['p99_ms']} vs {other['p99_ms']} ms")
                if peer.startswith("infinity") and clients in (8, 32):
                    met[peer].append(mine["texts_s"] >= 1.2 * other["texts_s"] and mine["p99_ms"] <= other["p99_ms"])
                if peer.startswith("infinity") and clients == 1:
                    met[peer].append(mine["p50_ms"] <= other["p50_ms"])
        if parts:
            lines.append(f"  {length:<5} {n:>2} texts {clients:>2} clients: textcl" + "; textcl".join(parts))
    for peer, cells in met.items():
        if cells:
            lines.append(f"  targets vs {peer}: {sum(cells)} of {len(cells)} cells met")
    return lines


def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--peer-server":
        run_peer(sys.argv[2], int(sys.argv[3]))
        return 0
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--setup", action="store_true", help="install infinity into its environment, then exit")
    p.add_argument("--arms", default="textcl,infinity,peer", help="comma-separated (default all three)")
    p.add_argument("--duration", type=float, default=6.0, help="seconds each cell issues requests (default 6)")
    p.add_argument("--drain", type=float, default=20.0, help="seconds a cell waits for requests in flight (default 20)")
    p.add_argument("--budget", type=float, default=420.0, help="start no cell after this many seconds (default 420)")
    p.add_argument("--threads", type=int, help="textcl serve --threads (default: its own default)")
    p.add_argument("--json", help="also write every row to this JSON file")
    args = p.parse_args(argv)
    if args.setup:
        setup()
        return 0
    arms = args.arms.split(",")
    if any(a.startswith("infinity") for a in arms) and not (VENV / ".ready").exists():
        sys.exit(f"infinity is not installed: python {Path(__file__).name} --setup")
    t0 = time.monotonic()
    (HERE / ".cache").mkdir(exist_ok=True)
    # --precision auto times bf16 against fp32 once per machine and model (cached; a measurement disturbed by
    # other work falls back to fp32 and is not cached): measured above, here, before any server loads. textcl's
    # arms then start alone, one after another, and the peers side by side.
    servers: dict[str, tuple[subprocess.Popen, int]] = {}
    rows: list[dict] = []
    if "textcl" in arms:  # what a user does once on a quiet machine: the choice is cached per machine and model
        from textcl.models import Encoder
        from textcl.models.encode_precision import in_precision

        print(f"textcl --precision auto: {in_precision(Encoder.load(minilm()), 'auto').choice.line()}", flush=True)
    try:
        for arm in [a for a in arms if a.startswith("textcl")]:
            servers[arm] = start(arm, args)
            wait_healthy(arm, *servers[arm])
        for arm in [a for a in arms if not a.startswith("textcl")]:
            servers[arm] = start(arm, args)
        for arm, (proc, port) in servers.items():
            wait_healthy(arm, proc, port)
        servers = {arm: servers[arm] for arm in arms}
        print(f"servers up in {time.monotonic() - t0:.0f} s; cpus {os.cpu_count()}, load average "
              f"{os.getloadavg()[0]:.2f}", flush=True)
        from textcl.models import Encoder

        check = texts("short", 8, 1) + texts("long", 4, 2)
        reference = Encoder.load(minilm()).encode(check)
        for arm, (_, port) in servers.items():
            got = embed(port, check)
            cos = np.sum(got * reference, axis=1) / np.linalg.norm(got, axis=1)
            print(f"  {arm:<13} vectors against Encoder.encode: min cosine {cos.min():.6f} (short "
                  f"{cos[:8].min():.6f}, long {cos[8:].min():.6f}){served_precision(arm, port)}", flush=True)
            asyncio.run(_load(port, [json.dumps({"input": texts("short", 4, 3), "model": NAME}).encode()], 4, 4, 1.5,
                              10))  # warm-up
        for length, n, clients in CELLS:
            if time.monotonic() - t0 > args.budget:
                print(f"budget of {args.budget:.0f} s spent: cells from {length} {n} x {clients} on skipped")
                break
            bodies = [json.dumps({"input": texts(length, n, 100 + i), "model": NAME}).encode() for i in range(64)]
            for arm, (_, port) in servers.items():
                row = asyncio.run(_load(port, bodies, n, clients, args.duration, args.drain))
                row.update(arm=arm, length=length, texts=n, clients=clients)
                rows.append(row)
                print(f"  {length:<5} {n:>2} texts {clients:>2} clients {arm:<9} {row['rps']:>7.2f} req/s "
                      f"{row['texts_s']:>7.1f} texts/s  p50 {row['p50_ms']} ms  p99 {row['p99_ms']} ms  "
                      f"({row['requests']} answers, {row['errors']} errors, {row['unfinished']} unfinished)",
                      flush=True)
    finally:
        for proc, _ in servers.values():
            stop_server(proc)
    print(f"\nratios (textcl / peer, same cell; {time.monotonic() - t0:.0f} s in all; load average now "
          f"{os.getloadavg()[0]:.2f}):")
    print("\n".join(ratios(rows, arms)))
    if args.json:
        from textcl._io import atomic_write_json

        atomic_write_json(args.json, {"args": vars(args), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
