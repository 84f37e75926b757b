# syntax=docker/dockerfile:1
#
# The peoplesync production image (the default target, `runtime`): sage-extractor,
# oomnitza-loader and syncctl in one small image that runs as a non-root user, with OCI labels.
# The simulators (sage-people-sim, oomnitza-sim) are not in it: target `sims` is an image of
# its own for demos. Pick the program with the container's command; the default is the loader.
#
#   docker build -t peoplesync:0.1.0 --build-arg VERSION=0.1.0 --build-arg REVISION=$(git rev-parse HEAD) .
#   docker build -t peoplesync-sims:0.1.0 --target sims .
#   docker run --rm peoplesync:0.1.0 oomnitza-loader --help
#
# Stages: `planner` reduces the workspace to a dependency recipe (cargo-chef); `builder` builds
# the dependencies from that recipe first — a layer reused until Cargo.toml or Cargo.lock
# change — then the workspace itself. Protobuf code is generated with protox, so no protoc.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS chef
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
ARG BINS="--bin sage-extractor --bin oomnitza-loader --bin syncctl --bin sage-people-sim --bin oomnitza-sim"
COPY --from=planner /src/recipe.json recipe.json
# Dependencies only: cached until the manifests or the lock file change.
# hadolint ignore=SC2086
RUN cargo chef cook --release --locked --recipe-path recipe.json ${BINS}
COPY . .
# hadolint ignore=SC2086
RUN cargo build --release --locked ${BINS} \
 && mkdir -p /out/prod /out/sims \
 && for bin in sage-extractor oomnitza-loader syncctl; do \
      cp "target/release/${bin}" /out/prod/; \
    done \
 && for bin in sage-people-sim oomnitza-sim; do \
      cp "target/release/${bin}" /out/sims/; \
    done

# glibc, as the builder; slim rather than distroless so the health check below has a shell.
FROM debian:${DEBIAN_RELEASE}-slim AS base
# The OS certificate store, trusted beside the built-in roots: a derived image adds a private CA
# with update-ca-certificates (or use OOMNITZA_CA_FILE / SAGE_PEOPLE_CA_FILE). Unpinned on
# purpose: the distribution's current bundle is the one to have.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 peoplesync \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin peoplesync
# The operations endpoint must be reachable from outside the container for probes and
# Prometheus; logs are JSON for log shippers. Both can be overridden per container.
# The allocator (mimalloc) gives freed memory back after 10 ms instead of its default 1 s: a
# run frees what it read page by page, and at a million workers the memory waiting out the
# longer delay is a quarter of the extractor's peak.
ENV PEOPLESYNC_HTTP_LISTEN=0.0.0.0:9090 \
    LOG_FORMAT=json \
    RUST_LOG=info \
    MIMALLOC_PURGE_DELAY=10
USER 10001:10001

# The simulators, for demos and the compose `demo` profile only.
FROM base AS sims
COPY --from=builder /out/sims/ /usr/local/bin/
EXPOSE 8080
CMD ["oomnitza-sim"]

# Production (the default target): the two services and syncctl.
FROM base AS runtime
ARG VERSION
ARG REVISION
ARG CREATED
LABEL org.opencontainers.image.title="peoplesync" \
      org.opencontainers.image.description="Keeps Oomnitza users in step with Sage People: sage-extractor, oomnitza-loader, syncctl" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="peoplesync"
COPY --from=builder /out/prod/ /usr/local/bin/
# 9090: /metrics, /healthz, /readyz (both services). 50051: the loader's gRPC control plane.
EXPOSE 9090 50051
# /healthz over bash's /dev/tcp: no curl or wget in the image (fewer packages to patch).
# Containers that serve no /healthz (syncctl) override or disable it.
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9090 && printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3 && head -n1 <&3 | grep -q ' 200 '"]
CMD ["oomnitza-loader"]
