# Image of the Nepxy ledger service: nepxy-api, plus the operator command
# line nepxy-replay. Fly.io builds it from fly.toml; elsewhere:
#
#   docker build -t nepxy-api .
#   docker run -e DATABASE_URL=... -e JWT_SECRET=... -p 8001:8001 nepxy-api
#
# Both stages use Debian bookworm, so the binaries link against the same
# glibc that the runtime stage provides.

# Rust 1.95.0, the version the workspace declares in rust-version.
FROM rust:1.95.0-slim-bookworm AS builder

# reqwest's rustls backend builds aws-lc-sys, which compiles C code with the
# compiler from build-essential. cmake and clang are installed too, for
# targets where aws-lc-sys builds with CMake or generates its bindings.
RUN apt-get update \
    && apt-get install --yes --no-install-recommends build-essential clang cmake \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /build
# .dockerignore keeps target/ and .git out of the build context.
COPY . .
RUN cargo build --release --locked \
        -p nepxy-api --bin nepxy-api \
        -p nepxy-replay --bin nepxy-replay

FROM debian:bookworm-slim AS runtime

# rustls reads the system certificate store to verify provider endpoints.
RUN apt-get update \
    && apt-get install --yes --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 nepxy \
    && useradd --system --uid 10001 --gid nepxy --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin nepxy

COPY --from=builder /build/target/release/nepxy-api /build/target/release/nepxy-replay /usr/local/bin/

EXPOSE 8001
USER nepxy

# No ENTRYPOINT: Fly runs the release_command of fly.toml ("nepxy-api
# migrate") in place of CMD and would prepend an ENTRYPOINT to it. The exec
# form makes nepxy-api the process that receives SIGTERM, so it shuts down
# gracefully.
CMD ["nepxy-api", "serve"]
