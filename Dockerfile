# syntax=docker/dockerfile:1
# One image per binary, picked by BINARY and the matching target:
#   docker build --build-arg BINARY=agentry-agent --target agentry-agent -t agentry-agent .
# BINARY is one of agentry-manager, agentry-agent, agentry-server.
ARG GO_VERSION=1.26

FROM golang:${GO_VERSION} AS build
ARG BINARY=agentry-manager
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN case "${BINARY}" in \
      agentry-manager) pkg=./cmd/manager ;; \
      agentry-agent)   pkg=./cmd/agent ;; \
      agentry-server)  pkg=./cmd/server ;; \
      *) echo "unknown BINARY ${BINARY}" >&2; exit 1 ;; \
    esac && \
    CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/app "$pkg"

# The agent runs inline scripts, so its image needs a shell; the others do not.
FROM debian:bookworm-slim AS agentry-agent
RUN useradd --uid 65532 --create-home --home-dir /home/agent agent
COPY --from=build /out/app /usr/local/bin/agentry-agent
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/agentry-agent"]

FROM gcr.io/distroless/static-debian12:nonroot AS agentry-manager
COPY --from=build /out/app /agentry-manager
USER 65532:65532
ENTRYPOINT ["/agentry-manager"]

FROM gcr.io/distroless/static-debian12:nonroot AS agentry-server
COPY --from=build /out/app /agentry-server
USER 65532:65532
ENTRYPOINT ["/agentry-server"]
