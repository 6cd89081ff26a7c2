# syntax=docker/dockerfile:1
# The controller image deploy/controller.yaml runs: ghcr.io/canary-stream/canary-stream.
#   docker build -t ghcr.io/canary-stream/canary-stream:0.1.0 .
# The build stage does what `make install` does (`pip install .`: maturin builds the Rust
# extension, Cargo.lock pinned), as a wheel; the runtime stage installs only that wheel and its
# dependencies. The extension is abi3, so the runtime Python only has to be >= 3.11.
# (This repository's CI has no container engine: tests/test_deploy_manifest.py checks that this
# file, the manifest and the CLI agree, and `make demo` installs the same way on a fresh clone.)

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG RUST_VERSION=1.95.0

FROM ${PYTHON_IMAGE} AS build
ARG RUST_VERSION
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*
RUN curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs \
    | sh -s -- -y --profile minimal --default-toolchain "${RUST_VERSION}"
ENV PATH=/root/.cargo/bin:${PATH}
WORKDIR /src
COPY . .
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
# A non-root user, as the Deployment has no securityContext of its own to set one.
USER 65532:65532
# 8080 verdict API (+ /metrics, /healthz, /readyz), 9001 Envoy ALS gRPC, 8087 HTTP push ingest.
EXPOSE 8080 9001 8087
ENTRYPOINT ["canary-stream"]
CMD ["controller"]
