# syntax=docker/dockerfile:1
#
# tidemark container image.
#
#   docker build -t tidemark .
#   docker run --rm -p 8080:8080 -v tidemark-data:/data \
#     -e TIDEMARK_API_TOKENS=admin:change-me-please tidemark
#
# The image binds 0.0.0.0:8080, and tidemark refuses a non-loopback address without
# API tokens: TIDEMARK_API_TOKENS must be set at run time (never baked into the image).
# Needs BuildKit (the default builder of Docker 23+ and of `docker compose`).

# ---------------------------------------------------------------------------- build
FROM rust:1.95-bookworm AS builder

# No extra packages: aws-lc-sys (rustls' crypto) ships pre-generated bindings and, when
# not building for FIPS, compiles its C sources with the `cc` crate (no cmake, clang or
# nasm needed); libsqlite3-sys compiles the bundled SQLite the same way. The image's
# gcc covers both.

WORKDIR /src
COPY . .

# The cargo registry and target/ live in cache mounts, so a source change recompiles
# only tidemark itself, not its ~330 dependencies. target/ is not part of the layer,
# hence the copy out in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin tidemark \
    && install -D -m 0755 target/release/tidemark /out/tidemark

# -------------------------------------------------------------------------- runtime
FROM debian:bookworm-slim

# ca-certificates: TLS to upstream APIs and to PostgreSQL. The health check below uses
# bash's /dev/tcp, so no curl.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 tidemark \
    && useradd --system --uid 10001 --gid tidemark --home-dir /data --no-create-home \
       --shell /usr/sbin/nologin tidemark \
    && install -d -o tidemark -g tidemark -m 0750 /data

COPY --from=builder /out/tidemark /usr/local/bin/tidemark

# The SQLite database (and its -wal/-shm files) lives in /data: mount a volume there to
# keep it. A new named volume takes this directory's owner, so the user can write it.
WORKDIR /data
USER tidemark:tidemark

ENV TIDEMARK_BIND=0.0.0.0:8080 \
    DATABASE_URL=sqlite:///data/tidemark.db

EXPOSE 8080

# GET /healthz over bash's /dev/tcp, on the port of TIDEMARK_BIND; healthy on a 200.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${TIDEMARK_BIND##*:} && printf 'GET /healthz HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n' >&3 && read -r -t 4 status <&3 && [[ $status == 'HTTP/1.1 200 '* ]]"]

ENTRYPOINT ["tidemark"]
CMD ["serve"]
