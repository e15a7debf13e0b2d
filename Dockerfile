# One image for the gateway, the worker and sent-sim; the compose file picks
# the command. Build stage compiles once; the runtime stage is small and runs
# as a non-root user.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p gateway -p worker -p sent-sim \
 && mkdir -p /out && cp target/release/gateway target/release/worker target/release/sent-sim /out/

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home app
COPY --from=build /out/ /usr/local/bin/
USER app
ENV APP_ENV=production LOG_FORMAT=json
EXPOSE 8000 9100 8090
CMD ["gateway"]
