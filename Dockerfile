# syntax=docker/dockerfile:1
# One image for every role: `relais serve --roles all|edge|session|router`.
#   docker build -t relais:0.1.0 .
# The Helm chart (helm/relais) runs it as uid 10001 with a read-only root filesystem; only
# data_dir (/var/lib/relais) is writable.

FROM rust:1-bookworm AS build
WORKDIR /src
# aws-lc-sys builds its C sources with cmake when no prebuilt variant applies.
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake \
    && rm -rf /var/lib/apt/lists/*
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release -p relais --bin relais --locked \
    && cp target/release/relais /usr/local/bin/relais

FROM debian:bookworm-slim
# ca-certificates: TLS to Redis, ScyllaDB and OTLP collectors; `sleep` (coreutils) serves the
# chart's preStop hook.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 relais \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/relais --no-create-home \
        --shell /usr/sbin/nologin relais \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/relais \
    && install -d -m 0755 /etc/relais
COPY --from=build /usr/local/bin/relais /usr/local/bin/relais
USER 10001:10001
WORKDIR /var/lib/relais
# 5222 STARTTLS, 5223 direct TLS, 7400 gRPC between roles, 9090 /healthz /readyz /metrics.
EXPOSE 5222 5223 7400 9090
ENTRYPOINT ["/usr/local/bin/relais"]
CMD ["serve"]
