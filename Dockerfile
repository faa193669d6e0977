# The manager image as a forge builds it (the release workflow, multi-arch with
# buildx). `make image` builds the same image without a container engine
# (hack/imagebuild, docs/adr/0013-images-without-a-registry.md).
#
#   docker buildx build --build-arg VERSION=0.1.0 --build-arg REVISION=$(git rev-parse HEAD) .

# The builder runs on the build machine's platform and cross-compiles: a static
# Go binary needs no emulation of the target.
FROM --platform=$BUILDPLATFORM golang:1.26 AS build
ARG TARGETOS TARGETARCH
ARG VERSION=dev
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY api/ api/
COPY cmd/ cmd/
COPY controllers/ controllers/
COPY internal/ internal/
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -buildvcs=false -ldflags "-s -w -X main.version=${VERSION}" -o /out/manager ./cmd/manager

# distroless/static: CA certificates, /etc/passwd with nonroot (65532), tzdata, nothing else.
FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="runnerpool-operator" \
      org.opencontainers.image.description="Autoscales Bitbucket Pipelines self-hosted Docker runners on Kubernetes." \
      org.opencontainers.image.source="https://github.com/runnerpool/runnerpool-operator" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
COPY --from=build /out/manager /manager
USER 65532:65532
ENTRYPOINT ["/manager"]
