#!/usr/bin/env bash
# Serving threads: `textcl serve`'s default (a ThreadGovernor over the usable cores) against --threads 1 and
# --threads 2, on a quiet machine, beside one busy process (a Python loop spinning on a core) and with that
# process starting LATE_S seconds (10) after the server, once it is up and serving, through bench_serve.py (the
# demo index, micro-batched server, 1 and 8 closed-loop clients on loopback). MACHINES="quiet busy late" by default.
#
#     bash benchmarks/serve_threads.sh [extra bench_serve.py options]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
run() {
  "$PY" benchmarks/bench_serve.py --indexes demo --arms batched --clients 1,8 --requests 1000 --duration 8 \
    --warmup 20 "$@"
}
SPIN=""
trap '[ -n "$SPIN" ] && kill "$SPIN" 2>/dev/null || true' EXIT
for machine in ${MACHINES:-quiet busy late}; do
  [ -n "$SPIN" ] && kill "$SPIN" 2>/dev/null || true
  SPIN=""
  if [ "$machine" = busy ]; then
    "$PY" -c "while True: pass" &
    SPIN=$!
  fi
  for threads in default 1 2; do
    echo "== machine $machine, server threads $threads"
    if [ "$machine" = late ]; then  # the other process starts once the server is up and serving
      (sleep "${LATE_S:-10}"; exec "$PY" -c "while True: pass") &
      SPIN=$!
    fi
    if [ "$threads" = default ]; then run "$@"; else run --threads "$threads" "$@"; fi
    if [ "$machine" = late ]; then kill "$SPIN" 2>/dev/null || true; SPIN=""; fi
  done
done
