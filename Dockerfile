# syntax=docker/dockerfile:1
#
# One image per binary, each a build target named like the binary:
#   docker build --target order-service -t order-service .
# Targets: order-service, analytics-service, notification-worker, orderflow (all-in-one).
#
# The builder is Debian 12 (bookworm) to match the glibc of the distroless runtime
# (cc-debian12); a newer builder produces binaries that fail there with "GLIBC_2.xx not found".

ARG RUST_VERSION=1.95
ARG CARGO_CHEF_VERSION=0.1.77

FROM rust:${RUST_VERSION}-bookworm AS chef
ARG CARGO_CHEF_VERSION
RUN cargo install cargo-chef --locked --version "${CARGO_CHEF_VERSION}"
WORKDIR /src

# Reduce the workspace to a dependency recipe: it changes only when Cargo.toml/Cargo.lock do,
# so the expensive dependency build below stays cached across source edits.
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
# sqlx checks queries against prepared metadata (.sqlx) instead of a live database.
ENV SQLX_OFFLINE=true
COPY --from=planner /src/recipe.json recipe.json
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    cargo chef cook --release --locked --recipe-path recipe.json
COPY . .
# All binaries in one step: every target below reuses this one cached layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    cargo build --release --locked \
        -p order-service -p analytics-service -p notification-worker -p orderflow \
 && mkdir -p /out/bin /out/data \
 && cp target/release/order-service target/release/analytics-service \
       target/release/notification-worker target/release/orderflow /out/bin/

# distroless/cc: glibc, libgcc_s, CA certificates, tzdata; no shell. UID/GID 65532 is "nonroot".
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.vendor="orderflow" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="gcr.io/distroless/cc-debian12:nonroot"
# Numeric, so Kubernetes can verify runAsNonRoot.
USER 65532:65532

FROM runtime AS order-service
LABEL org.opencontainers.image.title="order-service" \
      org.opencontainers.image.description="orderflow order API (HTTP :8080)"
COPY --from=builder /out/bin/order-service /usr/local/bin/order-service
ENV SERVICE_PORT=8080
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/order-service"]

FROM runtime AS analytics-service
LABEL org.opencontainers.image.title="analytics-service" \
      org.opencontainers.image.description="orderflow analytics consumer and API (HTTP :8081)"
COPY --from=builder /out/bin/analytics-service /usr/local/bin/analytics-service
ENV SERVICE_PORT=8081
EXPOSE 8081
ENTRYPOINT ["/usr/local/bin/analytics-service"]

FROM runtime AS notification-worker
LABEL org.opencontainers.image.title="notification-worker" \
      org.opencontainers.image.description="orderflow notification consumer (ops HTTP :8082)"
COPY --from=builder /out/bin/notification-worker /usr/local/bin/notification-worker
ENV SERVICE_PORT=8082
EXPOSE 8082
ENTRYPOINT ["/usr/local/bin/notification-worker"]

# All three services in one process on embedded SQLite; state lives in the /data volume.
FROM runtime AS orderflow
LABEL org.opencontainers.image.title="orderflow" \
      org.opencontainers.image.description="orderflow all-in-one (embedded SQLite, data in /data)"
COPY --from=builder /out/bin/orderflow /usr/local/bin/orderflow
COPY --from=builder --chown=65532:65532 /out/data /data
ENV ORDERFLOW_DATA_DIR=/data
VOLUME ["/data"]
ENTRYPOINT ["/usr/local/bin/orderflow"]
