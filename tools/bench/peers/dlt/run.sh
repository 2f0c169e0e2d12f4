#!/usr/bin/env bash
# dlt side by side with tidemark: installs dlt[duckdb] in a venv, starts the sandbox
# (release binary) with the same records as the benchmark's JSON, and runs sync.py: a full
# sync, then an incremental sync after 1% changed, and the tidemark/dlt ratios.
#
#   bash tools/bench/peers/dlt/run.sh [bench.json]
#
# DLT_VENV (default target/dlt-venv) is where the venv goes; DLT_TIMEOUT (default 3600)
# bounds the dlt run in seconds.
set -euo pipefail
cd "$(dirname "$0")/../../../.."

BENCH_JSON=${1:-bench.json}
VENV=${DLT_VENV:-target/dlt-venv}
TIMEOUT=${DLT_TIMEOUT:-3600}

[ -f "$BENCH_JSON" ] || { echo "no $BENCH_JSON: run the benchmark first (README, Benchmarks)"; exit 1; }
RECORDS=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["records"])' "$BENCH_JSON")

if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/python" -c 'import dlt, duckdb' 2>/dev/null \
    || "$VENV/bin/pip" install --quiet 'dlt[duckdb]'

cargo build --release --quiet
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
TIDEMARK_LOG=warn target/release/tidemark sandbox --port "$PORT" --records "$RECORDS" &
SANDBOX=$!
trap 'kill "$SANDBOX" 2>/dev/null || true' EXIT
BASE="http://127.0.0.1:$PORT"
for _ in $(seq 600); do
    curl -sf "$BASE/_control/requests" >/dev/null && break
    kill -0 "$SANDBOX" || { echo "the sandbox did not start"; exit 1; }
    sleep 0.5
done

timeout "$TIMEOUT" "$VENV/bin/python" tools/bench/peers/dlt/sync.py \
    --base "$BASE" --records "$RECORDS" --tidemark "$BENCH_JSON" \
    --out "${BENCH_JSON%.json}.dlt.json"
