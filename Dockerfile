# syntax=docker/dockerfile:1
# Build: make docker, which tags ghcr.io/workflow-runs-exporter/workflow_runs_exporter:<VERSION>
# (or: docker build -t workflow_runs_exporter .). Several platforms at once:
#   docker buildx build --platform linux/amd64,linux/arm64 .

# The build stage runs on the builder's own platform and cross-compiles for
# the target's (TARGETOS, TARGETARCH): Go needs no emulation, and the final
# stage runs nothing, so a multi-arch build needs no QEMU.
# The exact Go of go.mod's `go` line: with GOTOOLCHAIN=local (the image's
# default) an older 1.26.x image would refuse to build.
FROM --platform=$BUILDPLATFORM golang:1.26.8-bookworm AS build
ENV GOTOOLCHAIN=local
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY VERSION ./
COPY cmd ./cmd
COPY collector ./collector
COPY internal ./internal
# make docker and the release workflow pass all four. A plain `docker
# build` takes the version from the VERSION file and the date from the
# clock; the build context has no git history for the revision and branch.
ARG VERSION=
ARG REVISION=unknown
ARG BRANCH=unknown
ARG BUILDDATE=
ARG TARGETOS
ARG TARGETARCH
RUN CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath \
      -ldflags "-s -w \
        -X github.com/prometheus/common/version.Version=${VERSION:-$(cat VERSION)} \
        -X github.com/prometheus/common/version.Revision=${REVISION} \
        -X github.com/prometheus/common/version.Branch=${BRANCH} \
        -X github.com/prometheus/common/version.BuildUser=docker \
        -X github.com/prometheus/common/version.BuildDate=${BUILDDATE:-$(date -u +%Y%m%d-%H:%M:%S)}" \
      -o /out/workflow_runs_exporter ./cmd/workflow_runs_exporter
# The state directory, made here because the final image has no shell.
RUN mkdir -p /out/state

# Static binary on a distroless base: CA certificates for the HTTPS API,
# no shell, no package manager, a non-root user.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/workflow_runs_exporter /bin/workflow_runs_exporter
# The state store's directory, owned by the user the exporter runs as, so
# that a named volume mounted there starts with this owner (in Kubernetes,
# the pod's fsGroup does that job). No VOLUME: it would give every plain
# `docker run` an anonymous volume that outlives the container and is
# never reused; mount a named one to keep the store (README "Deployment").
COPY --from=build --chown=65532:65532 /out/state /var/lib/workflow_runs_exporter
USER 65532:65532
EXPOSE 10025
ENTRYPOINT ["/bin/workflow_runs_exporter"]
CMD ["--config.file=/etc/workflow_runs_exporter/config.yml", "--storage.path=/var/lib/workflow_runs_exporter"]
