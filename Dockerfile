# syntax=docker/dockerfile:1
# Build: make docker   (or: docker build -t workflow_runs_exporter .)

# The exact Go of go.mod's `go` line: with GOTOOLCHAIN=local (the image's
# default) an older 1.26.x image would refuse to build.
FROM golang:1.26.8-bookworm AS build
ENV GOTOOLCHAIN=local
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY cmd ./cmd
COPY collector ./collector
COPY internal ./internal
ARG VERSION=dev
ARG REVISION=unknown
RUN CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w \
        -X github.com/prometheus/common/version.Version=${VERSION} \
        -X github.com/prometheus/common/version.Revision=${REVISION} \
        -X github.com/prometheus/common/version.Branch=main \
        -X github.com/prometheus/common/version.BuildUser=docker" \
      -o /out/workflow_runs_exporter ./cmd/workflow_runs_exporter
# The state directory, made here because the final image has no shell.
RUN mkdir -p /out/state

# Static binary on a distroless base: CA certificates for the HTTPS API,
# no shell, no package manager, a non-root user.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/workflow_runs_exporter /bin/workflow_runs_exporter
# The state store's directory, owned by the user the exporter runs as. A new
# named Docker volume mounted there starts with this owner (in Kubernetes,
# the pod's fsGroup does that job).
COPY --from=build --chown=65532:65532 /out/state /var/lib/workflow_runs_exporter
USER 65532:65532
VOLUME ["/var/lib/workflow_runs_exporter"]
EXPOSE 10025
ENTRYPOINT ["/bin/workflow_runs_exporter"]
CMD ["--config.file=/etc/workflow_runs_exporter/config.yml", "--storage.path=/var/lib/workflow_runs_exporter"]
