# syntax=docker/dockerfile:1
# Build: make docker   (or: docker build -t workflow_runs_exporter .)

FROM golang:1.26-bookworm AS build
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

# Static binary on a distroless base: CA certificates for the HTTPS API,
# no shell, no package manager, a non-root user.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/workflow_runs_exporter /bin/workflow_runs_exporter
USER 65532:65532
EXPOSE 10025
ENTRYPOINT ["/bin/workflow_runs_exporter"]
CMD ["--config.file=/etc/workflow_runs_exporter/config.yml"]
