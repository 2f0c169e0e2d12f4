#!/usr/bin/env bash
# Generated clients (docs/clients.md): openapi/openapi.json must be taken whole by the
# generators people use, and the typed programs built on what they generate must work.
# - the document's shapes (tools/clients/check_document.py): plain union members,
#   discriminators, no required default, problem examples, plain summaries;
# - openapi-python-client (pinned, tools/clients/requirements.txt) generates a Python
#   client with zero warnings and one API module per operationId;
# - openapi-typescript (pinned, tools/clients/package-lock.json) generates TypeScript
#   types, and tools/clients/quickstart.ts compiles against them (tsc --strict --noEmit);
# - against a running gateway (the debug build, a temporary SQLite file, the sandbox,
#   loopback only): tools/clients/quickstart.py (checked by mypy --strict) registers the
#   quickstart source, syncs, waits for the job, reads the jobs and pages the mirror and
#   the feed to the end; then quickstart.ts, compiled, does the same (it replaces the
#   source the Python run registered).
# Bounded: every wait has a deadline, and the whole run a hard timeout.
set -euo pipefail
cd "$(dirname "$0")/.."

TIMEOUT=${CLIENTS_TIMEOUT:-600}
RECORDS=200
TOOLS=tools/clients
OUT=target/clients
VENV=target/clients-venv

# The whole script under a hard timeout (re-run under `timeout`, once).
if [ -z "${CLIENTS_UNDER_TIMEOUT:-}" ]; then
    CLIENTS_UNDER_TIMEOUT=1 exec timeout --kill-after=10 "$TIMEOUT" bash "$0" "$@"
fi

echo "-- the document"
python3 "$TOOLS/check_document.py" openapi/openapi.json

echo "-- Python: openapi-python-client"
# The venv is rebuilt when the pinned requirements change.
if ! cmp -s "$TOOLS/requirements.txt" "$VENV/requirements.txt" 2>/dev/null; then
    rm -rf "$VENV"
    if ! python3 -c 'import ensurepip' 2>/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    fi
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check --requirement "$TOOLS/requirements.txt"
    cp "$TOOLS/requirements.txt" "$VENV/requirements.txt"
fi
# On PATH for the generator's own post-processing (ruff).
export PATH="$PWD/$VENV/bin:$PATH"
openapi-python-client --version
rm -rf "$OUT/python" && mkdir -p "$OUT/python"
openapi-python-client generate --path openapi/openapi.json --meta none \
    --output-path "$OUT/python/tidemark_client" >"$OUT/python-generate.log" 2>&1 \
    || { cat "$OUT/python-generate.log"; exit 1; }
# Anything besides the line naming the output is a warning (the generator prints them,
# and still exits 0).
warnings=$(grep -v -e '^Generating ' -e '^$' "$OUT/python-generate.log" || true)
if [ -n "$warnings" ]; then
    cat "$OUT/python-generate.log"
    echo "openapi-python-client printed warnings (above): the document must generate cleanly"
    exit 1
fi
echo "openapi-python-client: no warning"
python3 "$TOOLS/check_document.py" openapi/openapi.json "$OUT/python/tidemark_client"
# The program's types, checked against the client's (whose own code is the generator's).
MYPYPATH="$OUT/python" mypy --strict --follow-imports=silent --python-version 3.11 \
    --cache-dir "$OUT/mypy-cache" "$TOOLS/quickstart.py"

echo "-- TypeScript: openapi-typescript"
(cd "$TOOLS" && npm ci --no-audit --no-fund --loglevel=error)
rm -rf "$TOOLS/generated" "$TOOLS/dist"
# `--default-non-nullable=false`: openapi-typescript otherwise makes every defaulted
# property of a component required, and cannot tell that a component is a request body
# (docs/clients.md).
(cd "$TOOLS" && npx --no-install openapi-typescript ../../openapi/openapi.json \
    --default-non-nullable=false --output generated/tidemark.ts) >"$OUT/ts-generate.log" 2>&1 \
    || { cat "$OUT/ts-generate.log"; exit 1; }
if grep -v -e 'openapi-typescript' -e '→' -e '^$' "$OUT/ts-generate.log"; then
    echo "openapi-typescript printed warnings (above)"
    exit 1
fi
(cd "$TOOLS" && npx --no-install tsc --version && npx --no-install tsc --strict --noEmit -p .)
echo "quickstart.ts compiles under tsc --strict"
# Emitted for the run below, without checking the types again.
(cd "$TOOLS" && npx --no-install tsc --strict --noCheck -p .)

echo "-- the typed programs against the app"
cargo build --quiet --bin tidemark
BIN=$PWD/target/debug/tidemark
WORK=$(mktemp -d /tmp/tidemark-clients.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
SANDBOX_PORT=$(free_port)
API_PORT=$(free_port)
TOKEN=$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')
API=http://127.0.0.1:$API_PORT
SANDBOX=http://127.0.0.1:$SANDBOX_PORT
TIDEMARK_LOG=warn "$BIN" sandbox --port "$SANDBOX_PORT" --records "$RECORDS" >"$WORK/sandbox.log" 2>&1 &
PIDS+=($!)
TIDEMARK_LOG=warn "$BIN" serve --bind "127.0.0.1:$API_PORT" \
    --database-url "sqlite://$WORK/tidemark.db" --api-tokens "admin:$TOKEN" \
    --upstream-allow "127.0.0.1:$SANDBOX_PORT" --workers 2 >"$WORK/serve.log" 2>&1 &
PIDS+=($!)
ready=
for _ in $(seq 100); do
    if curl --silent --fail "$API/readyz" >/dev/null && curl --silent --output /dev/null "$SANDBOX/"; then
        ready=1
        break
    fi
    sleep 0.1
done
[ -n "$ready" ] || { cat "$WORK/serve.log" "$WORK/sandbox.log"; exit 1; }

PYTHONPATH="$OUT/python" python "$TOOLS/quickstart.py" "$API" "$TOKEN" "$SANDBOX" \
    examples/sources/insales.json "$RECORDS" \
    || { tail -20 "$WORK/serve.log"; exit 1; }
node "$TOOLS/dist/quickstart.js" "$API" "$TOKEN" "$SANDBOX" \
    || { tail -20 "$WORK/serve.log"; exit 1; }
echo "clients: the generated Python client and TypeScript types work"
