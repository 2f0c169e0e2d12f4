#!/usr/bin/env bash
# Screenshots tidemark's API docs (/docs/, Swagger UI) with headless Chromium while every
# request that does not go to 127.0.0.1 fails: the picture shows the UI rendering from
# the assets embedded in the binary alone, with no CDN and no internet.
#
#   tools/docs-screenshot.sh [TIDEMARK_BINARY] [OUTPUT_PNG]
#
# TIDEMARK_BINARY defaults to target/release/tidemark, else target/debug/tidemark (both
# relative to the repository); OUTPUT_PNG defaults to docs-screenshot.png in the current
# directory. Installs Debian's `chromium` with apt-get when /usr/bin/chromium is
# missing (as root, or through sudo).
set -euo pipefail

readonly ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly CHROMIUM=/usr/bin/chromium
readonly HEALTH_TIMEOUT=30 # seconds to wait for /healthz

die() {
    echo "docs-screenshot: $*" >&2
    exit 1
}

# --- arguments ---------------------------------------------------------------------
if [[ $# -gt 2 || ${1:-} == -h || ${1:-} == --help ]]; then
    sed -n '2,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    [[ $# -gt 2 ]] && exit 2
    exit 0
fi

bin=${1:-}
if [[ -z $bin ]]; then
    if [[ -x $ROOT/target/release/tidemark ]]; then
        bin=$ROOT/target/release/tidemark
    else
        bin=$ROOT/target/debug/tidemark
    fi
fi
[[ -f $bin && -x $bin ]] || die "no tidemark binary at $bin (run cargo build first, or pass its path)"
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")

out=${2:-docs-screenshot.png}
[[ $out == *.png ]] || die "the output path must end in .png (got $out)"
out_dir=$(dirname "$out")
[[ -d $out_dir ]] || die "no such directory: $out_dir"
out=$(cd "$out_dir" && pwd)/$(basename "$out")

# --- chromium ----------------------------------------------------------------------
if [[ ! -x $CHROMIUM ]]; then
    echo "docs-screenshot: installing chromium with apt-get" >&2
    sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null || die "$CHROMIUM is missing and installing it needs root or sudo"
        sudo=(sudo)
    fi
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends chromium >/dev/null
    [[ -x $CHROMIUM ]] || die "apt-get did not install $CHROMIUM"
fi

# --- scratch space and cleanup -----------------------------------------------------
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tidemark-docs.XXXXXX")
tidemark_pid=
cleanup() {
    local status=$?
    if [[ -n $tidemark_pid ]] && kill -0 "$tidemark_pid" 2>/dev/null; then
        kill -TERM "$tidemark_pid" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$tidemark_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$tidemark_pid" 2>/dev/null || true
        wait "$tidemark_pid" 2>/dev/null || true
    fi
    rm -rf "$tmp"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Prints the HTTP status of GET http://127.0.0.1:$1$2 (bash's /dev/tcp: no curl needed);
# fails when nothing answers.
http_status() {
    local port=$1 path=$2 line
    exec 3<>"/dev/tcp/127.0.0.1/$port" || return 1
    printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1:%s\r\nConnection: close\r\n\r\n' \
        "$path" "$port" >&3
    IFS=' ' read -r -t 5 _ line _ <&3 || { exec 3<&-; return 1; }
    exec 3<&-
    printf '%s\n' "${line%$'\r'}"
}

# A loopback port nothing listens on (tidemark is restarted on another one should it
# lose the race for it).
free_port() {
    local port
    for _ in $(seq 100); do
        port=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
    return 1
}

# --- start tidemark ----------------------------------------------------------------
# Loopback and no API tokens: the docs need none, and tidemark allows that on loopback.
port=
for attempt in 1 2 3; do
    port=$(free_port) || die "found no free loopback port"
    TIDEMARK_BIND=127.0.0.1:$port \
        DATABASE_URL=sqlite://$tmp/tidemark.db \
        TIDEMARK_API_TOKENS= \
        TIDEMARK_LOG=warn \
        TIDEMARK_LOG_FORMAT=pretty \
        "$bin" serve >"$tmp/tidemark.log" 2>&1 &
    tidemark_pid=$!

    deadline=$((SECONDS + HEALTH_TIMEOUT))
    status=
    while ((SECONDS < deadline)); do
        kill -0 "$tidemark_pid" 2>/dev/null || break
        status=$(http_status "$port" /healthz 2>/dev/null) || status=
        [[ $status == 200 ]] && break
        sleep 0.2
    done
    [[ $status == 200 ]] && break

    if kill -0 "$tidemark_pid" 2>/dev/null; then
        cat "$tmp/tidemark.log" >&2
        die "tidemark did not answer 200 on /healthz within ${HEALTH_TIMEOUT}s (last status: ${status:-none})"
    fi
    wait "$tidemark_pid" 2>/dev/null || true
    tidemark_pid=
    if ((attempt == 3)) || ! grep -qi 'address already in use' "$tmp/tidemark.log"; then
        cat "$tmp/tidemark.log" >&2
        die "tidemark exited before it was healthy"
    fi
done

url=http://127.0.0.1:$port/docs/
for asset in "" swagger-initializer.js swagger-ui-bundle.js /openapi.json; do
    [[ $asset == /* ]] && path=$asset || path=/docs/$asset
    status=$(http_status "$port" "$path") || status=
    [[ $status == 200 ]] || die "GET $path answered ${status:-nothing}, not 200: the docs UI cannot render"
done

# --- screenshot --------------------------------------------------------------------
# Every request goes to a proxy on 127.0.0.1:9 (the discard port, where nothing
# listens), so it fails, except requests to 127.0.0.1 itself: `<-loopback>` drops the
# implicit bypass of localhost/[::1]/127.0.0.1 and `127.0.0.1` puts back just that.
# Background, update, sync and QUIC traffic is switched off as well.
offline_chromium() {
    "$CHROMIUM" \
        --headless \
        --no-sandbox \
        --disable-gpu \
        --disable-dev-shm-usage \
        --disable-background-networking \
        --disable-component-update \
        --disable-sync \
        --disable-default-apps \
        --disable-extensions \
        --no-first-run \
        --no-default-browser-check \
        --disable-quic \
        --hide-scrollbars \
        --user-data-dir="$tmp/chromium" \
        --proxy-server="http://127.0.0.1:9" \
        --proxy-bypass-list="<-loopback>;127.0.0.1" \
        "$@"
}

# The cut-off works: the very same server, named `localhost` instead of 127.0.0.1, is
# routed to the dead proxy and must not answer.
offline_chromium --dump-dom "http://localhost:$port/healthz" >"$tmp/probe.html" 2>"$tmp/chromium.log" || true
if grep -q '"status"' "$tmp/probe.html"; then
    die "chromium reached http://localhost:$port/ past the dead proxy: the network is not cut off"
fi

rm -f "$out"
offline_chromium \
    --virtual-time-budget=10000 \
    --window-size=1280,1600 \
    --screenshot="$out" \
    "$url" >"$tmp/chromium.log" 2>&1 || {
    cat "$tmp/chromium.log" >&2
    die "chromium failed"
}
[[ -s $out ]] || {
    cat "$tmp/chromium.log" >&2
    die "chromium wrote no screenshot"
}

echo "docs-screenshot: $url rendered offline to $out"
