#!/usr/bin/env bash
# API fuzzing: Schemathesis against a running tidemark's /openapi.json with an admin token.
# Every operation is tested (none is excluded); the run fails on any 5xx, any response
# whose status, content type, headers or body the document does not describe, any
# request the document allows that the server refuses (two exceptions, explained in the
# generated configuration below), any request the document forbids that the server
# accepts, and every other Schemathesis check (auth enforced, deleted resources gone,
# created ones readable, 405 with `Allow`, ...). Bounded: SCHEMATHESIS_MAX_EXAMPLES test cases per
# operation and phase, and a hard timeout of SCHEMATHESIS_TIMEOUT seconds.
#
# The gateway runs with a fresh SQLite file, the five example sources registered against
# a sandbox upstream and synced once, so that path parameters (drawn half of the time
# from the real names, keys and job ids) reach real objects.
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
MAX_EXAMPLES=${SCHEMATHESIS_MAX_EXAMPLES:-40}
TIMEOUT=${SCHEMATHESIS_TIMEOUT:-420}
# A fixed seed, so that CI is repeatable: a finding fails the same way on every run.
# SCHEMATHESIS_SEED=<n> explores other seeds (`random`: Schemathesis picks and prints one).
SEED=${SCHEMATHESIS_SEED:-20261123}
SEED_ARGS=()
[ "$SEED" != random ] && SEED_ARGS=(--seed "$SEED")

VENV=target/schemathesis-venv
if [ "$("$VENV/bin/schemathesis" --version 2>/dev/null)" != "schemathesis, version $SCHEMATHESIS_VERSION" ]; then
    rm -rf "$VENV"
    if ! python3 -c 'import ensurepip' 2>/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    fi
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi
"$VENV/bin/schemathesis" --version

cargo build --quiet
BIN=target/debug/tidemark

WORK=$(mktemp -d /tmp/tidemark-fuzz.XXXXXX)
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
WEBHOOK_SECRET=$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')
API=http://127.0.0.1:$API_PORT

TIDEMARK_LOG=warn "$BIN" sandbox --port "$SANDBOX_PORT" --records 50 >"$WORK/sandbox.log" 2>&1 &
PIDS+=($!)
# Starts the gateway on the run's database; $1: workers, $2: hosts upstream requests may go to.
serve() {
    TIDEMARK_LOG=warn "$BIN" serve --bind "127.0.0.1:$API_PORT" \
        --database-url "sqlite://$WORK/tidemark.db" --api-tokens "admin:$TOKEN" \
        --upstream-allow "$2" --workers "$1" >>"$WORK/serve.log" 2>&1 &
    SERVE_PID=$!
    PIDS+=("$SERVE_PID")
    for _ in $(seq 100); do
        curl --silent --fail "$API/readyz" >/dev/null && return
        sleep 0.1
    done
    cat "$WORK/serve.log"
    exit 1
}
api() { curl --silent --show-error --fail-with-body -H "Authorization: Bearer $TOKEN" "$@"; }
serve 2 "127.0.0.1:$SANDBOX_PORT"

# The example sources, pointed at the sandbox and given a webhook secret.
for file in examples/sources/*.json; do
    python3 - "$file" "$SANDBOX_PORT" "$WEBHOOK_SECRET" <<'EOF' >"$WORK/source.json"
import json, sys
spec = json.load(open(sys.argv[1]))
spec["base_url"] = f"http://127.0.0.1:{sys.argv[2]}"
spec["webhook_secret"] = {"value": sys.argv[3]}
print(json.dumps(spec))
EOF
    api -H 'Content-Type: application/json' --data-binary "@$WORK/source.json" \
        "$API/v1/sources" >/dev/null
    name=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["name"])' "$file")
    api -X POST "$API/v1/sources/$name/sync" >/dev/null
done
# A named feed consumer, so that the consumer routes reach a real one too.
api "$API/v1/changes?limit=1&consumer=fuzz" >/dev/null
# Wait (bounded) until the first syncs have finished, so the mirror and feed hold records.
for _ in $(seq 300); do
    active=$(api "$API/v1/jobs?status=queued" | python3 -c 'import json, sys; print(len(json.load(sys.stdin)["results"]))')
    active=$((active + $(api "$API/v1/jobs?status=running" | python3 -c 'import json, sys; print(len(json.load(sys.stdin)["results"]))')))
    [ "$active" = 0 ] && break
    sleep 0.2
done

# Fuzzing runs against a gateway without workers: the sources it registers (any host is
# allowed for registration) never make the gateway send a request anywhere.
kill "$SERVE_PID"
wait "$SERVE_PID" || true
serve 0 ""

# Real names, keys and job ids: path parameters take one of them half of the time, so
# operations reach real objects as well as missing ones.
python3 - "$API" "$TOKEN" "$WEBHOOK_SECRET" "$PWD/target/schemathesis-cache" <<'EOF' >"$WORK/schemathesis.toml"
import json, sys, urllib.request
api, token, webhook_secret, cache = sys.argv[1:]
def get(path):
    request = urllib.request.Request(api + path, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)
sources = get("/v1/sources?limit=1000")["results"]
streams = sorted({s["name"] for source in sources for s in source["streams"]})
keys = [r["key"] for r in get("/v1/sources/insales/streams/products/records?limit=20")["results"]]
jobs = [j["id"] for j in get("/v1/jobs?limit=1000")["results"]]
consumers = [c["name"] for c in get("/v1/consumers?limit=1000")["results"]]
dictionaries = {
    "sources": [s["name"] for s in sources],
    "streams": streams,
    "keys": keys,
    "jobs": jobs,
    "consumers": consumers,
    "webhook_secrets": [webhook_secret],
}
# Schemathesis keeps what it learnt between runs (failures replay first); not in the tree.
print(f"[cache]\ndirectory = {json.dumps(cache)}")
print("[dictionaries]")
for name, values in dictionaries.items():
    print(f"{name} = {{ values = {json.dumps(values)} }}")
print("[parameters]")
for param, name in [("path.source", "sources"), ("path.stream", "streams"), ("path.key", "keys"),
                    ("path.id", "jobs"), ("path.name", "consumers"),
                    ("header.X-Webhook-Secret", "webhook_secrets")]:
    print(f'"{param}" = {{ dictionary = "{name}", probability = 0.5 }}')
print("""
# Every check Schemathesis has (the list is spelled out so that a new version's checks
# are a deliberate choice).
[checks]
not_a_server_error.enabled = true
status_code_conformance.enabled = true
content_type_conformance.enabled = true
response_headers_conformance.enabled = true
response_schema_conformance.enabled = true
positive_data_acceptance.enabled = true
negative_data_rejection.enabled = true
missing_required_header.enabled = true
unsupported_method.enabled = true
allow_header_conformance.enabled = true
use_after_free.enabled = true
ensure_resource_availability.enabled = true
ignored_auth.enabled = true
object_level_authorization.enabled = true

# The feed's `since` (and `Last-Event-ID`) is an opaque token the server authenticates: no
# schema can tell a valid one from a random string, and `400 invalid-since-format` is the
# documented answer to the latter. Only there may a schema-valid request get a 400.
[[operations]]
include-path-regex = "^/v1/changes(/stream)?$"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409", "429"]

# A source spec has rules a JSON schema cannot state: unique stream names, `deletes`
# naming another stream of the source, URLs the parser accepts, hosts the upstream policy
# allows; a cursor's shape depends on the stream's pagination type. The server answers
# those with 422 and the field's pointer; every other check still runs on these operations.
[[operations]]
include-name-regex = "^(POST /v1/sources|PUT /v1/sources/.source.|PUT /v1/sources/.source./streams/.stream./cursor)$"
checks.positive_data_acceptance.enabled = false
""")
print(f"gateway: {len(sources)} sources, {len(streams)} stream names, {len(keys)} keys, {len(jobs)} jobs, "
      f"{len(consumers)} consumers", file=sys.stderr)
EOF

set +e
timeout --kill-after=10 "$TIMEOUT" "$VENV/bin/schemathesis" --config-file "$WORK/schemathesis.toml" \
    --no-color run "$API/openapi.json" \
    --header "Authorization: Bearer $TOKEN" \
    --max-examples "$MAX_EXAMPLES" "${SEED_ARGS[@]}" \
    --output-truncate false
status=$?
set -e
if [ "$status" = 124 ] || [ "$status" = 137 ]; then
    echo "schemathesis did not finish within ${TIMEOUT}s"
fi
if [ "$status" != 0 ]; then
    echo "--- gateway log (last 50 lines) ---"
    tail -n 50 "$WORK/serve.log"
fi
exit "$status"
