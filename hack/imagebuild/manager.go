package main

import (
	"context"
	"fmt"
	"io/fs"
	"os"
)

// nonroot is the distroless convention, which the chart's securityContext
// (runAsUser 65532) also names.
const nonroot = 65532

// caBundle is Debian's ca-certificates bundle, where Go's crypto/x509 looks first.
const caBundle = "/etc/ssl/certs/ca-certificates.crt"

// managerImage is scratch plus the CA bundle (the manager calls
// api.bitbucket.org over TLS), a passwd entry for the non-root user, and the
// static manager binary: the same image the Dockerfile makes on a forge.
func managerImage(ctx context.Context, b *build) (Image, error) {
	if _, err := os.Stat(caBundle); err != nil {
		return Image{}, fmt.Errorf("the CA bundle comes from the host: install Debian's ca-certificates (%w)", err)
	}
	bin, err := b.goBuild(ctx, "./cmd/manager", "manager", "-X main.version="+b.version)
	if err != nil {
		return Image{}, err
	}
	return Image{
		Config: Config{
			User:       fmt.Sprintf("%d:%d", nonroot, nonroot),
			Entrypoint: []string{"/manager"},
			WorkingDir: "/",
			Labels:     b.labels("runnerpool-operator", "Autoscales Bitbucket Pipelines self-hosted Docker runners on Kubernetes."),
		},
		Layers: []Layer{
			{Comment: "base: CA bundle, nonroot user", Entries: baseEntries()},
			{Comment: "manager " + b.version, Entries: []Entry{{Path: "/manager", Source: bin, Mode: 0o755}}},
		},
	}, nil
}

// baseEntries is what a static Go program needs of a distribution.
func baseEntries() []Entry {
	return []Entry{
		Copy(caBundle, caBundle),
		File("/etc/passwd", 0o644, fmt.Appendf(nil, "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%d:%d:nonroot:/home/nonroot:/sbin/nologin\n", nonroot, nonroot)),
		File("/etc/group", 0o644, fmt.Appendf(nil, "root:x:0:\nnonroot:x:%d:\n", nonroot)),
		{Path: "/home/nonroot", Mode: fs.ModeDir | 0o700, UID: nonroot, GID: nonroot},
		Dir("/tmp", fs.ModeSticky|0o777),
	}
}

// labels are the OCI annotations of the project's images.
func (b *build) labels(title, description string) map[string]string {
	l := map[string]string{
		"org.opencontainers.image.title":       title,
		"org.opencontainers.image.description": description,
		"org.opencontainers.image.source":      b.source,
		"org.opencontainers.image.version":     b.version,
		"org.opencontainers.image.licenses":    "Apache-2.0",
	}
	if b.revision != "" {
		l["org.opencontainers.image.revision"] = b.revision
	}
	return l
}

// pauseImage is the sandbox image of the test node.
func pauseImage(ctx context.Context, b *build) (Image, error) {
	bin, err := b.goBuild(ctx, "./test/images/pause", "pause")
	if err != nil {
		return Image{}, err
	}
	return Image{
		Config: Config{
			User:       "65535:65535",
			Entrypoint: []string{"/pause"},
			Labels:     b.labels("pause", "Pod sandbox of runnerpool-operator's test node."),
		},
		Layers: []Layer{{Comment: "pause", Entries: []Entry{{Path: "/pause", Source: bin, Mode: 0o755}}}},
	}, nil
}
