# syntax=docker/dockerfile:1
#
# authcode-service. The build context is the repository root:
#
#   docker build -f deploy/docker/authcode.Dockerfile -t devicelink/authcode-service .
#
# Stage 1 compiles the dependencies against stub sources, so that layer is
# rebuilt only when a manifest or Cargo.lock changes; stage 2 compiles the
# real sources; the runtime stage holds the binary and nothing else (no
# shell, no package manager), running as a numeric non-root user.

FROM rust:1.95-bookworm AS builder
WORKDIR /src
ENV CARGO_TERM_COLOR=never \
    CARGO_INCREMENTAL=0

# Dependencies only. Every workspace member's manifest is needed for cargo
# to load the workspace; each gets a stub target. The tests crate (which
# depends on both services) is never compiled here: `-p` selects authcode.
# shared/build.rs is stubbed too, so protox and tonic-prost-build (its
# build-dependencies) are compiled and cached without the protos.
COPY Cargo.toml Cargo.lock ./
COPY shared/Cargo.toml shared/
COPY services/authcode/Cargo.toml services/authcode/
COPY services/registration/Cargo.toml services/registration/
COPY tests/Cargo.toml tests/
RUN mkdir -p shared/src services/authcode/src services/registration/src/bin tests/src \
    && printf 'fn main() {}\n' > shared/build.rs \
    && printf 'fn main() {}\n' > services/authcode/src/main.rs \
    && printf 'fn main() {}\n' > services/registration/src/main.rs \
    && printf 'fn main() {}\n' > services/registration/src/bin/devicelinkctl.rs \
    && touch shared/src/lib.rs services/authcode/src/lib.rs \
             services/registration/src/lib.rs tests/src/lib.rs \
    && cargo build --locked --release -p devicelink-authcode --bin authcode-service

# The real sources. COPY keeps the files' original modification times, which
# can be older than the stub build: touch them so cargo rebuilds the
# workspace crates (the dependencies stay cached).
COPY proto proto
COPY shared shared
COPY services/authcode services/authcode
RUN find shared services/authcode -name '*.rs' -exec touch {} + \
    && cargo build --locked --release -p devicelink-authcode --bin authcode-service

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="authcode-service" \
      org.opencontainers.image.description="devicelink: mints short-lived, single-use authentication codes" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /src/target/release/authcode-service /usr/local/bin/authcode-service
# 65532 is distroless's "nonroot" user; numeric so that Kubernetes can verify
# runAsNonRoot without reading /etc/passwd.
# mimalloc would madvise its memory for transparent huge pages, and each
# first touch of such a region then maps 2 MiB at once: the services' RSS
# doubled (registration 77 against 37 MiB at the soak's start) and stepped
# up by 2 MiB pages minutes into a run. Small heaps gain little from huge
# pages; set it to 1 to allow them again.
ENV MIMALLOC_ALLOW_THP=0
USER 65532:65532
# gRPC (LISTEN_ADDR) and Prometheus metrics (METRICS_ADDR).
EXPOSE 50051 9090
ENTRYPOINT ["/usr/local/bin/authcode-service"]
