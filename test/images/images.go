// Package images names the container images `make images` builds into
// bin/images (hack/imagebuild, docs/adr/0013-images-without-a-registry.md), so
// that tests load and run them by the same references.
//
// Each archive is an OCI image layout for linux on the build machine's
// architecture, named by the io.containerd.image.name annotation:
//
//	ctr -n k8s.io images import bin/images/pause.tar
package images

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
)

// AppVersion is the chart's appVersion (charts/runnerpool-operator/Chart.yaml),
// the manager image's tag by default; a test keeps the two equal.
const AppVersion = "0.1.0"

// ManagerRepository is where the release workflow publishes the manager image.
const ManagerRepository = "ghcr.io/runnerpool/runnerpool-operator"

// TestRegistry and TestTag name the images that exist only for tests. The
// registry is never contacted: kubelet finds them in containerd, and a pod
// using them must not pull (an image with a non-latest tag is IfNotPresent).
const (
	TestRegistry = "runnerpool.dev/test"
	TestTag      = "v1"
)

// Image is one image `make images` writes.
type Image struct {
	// Name is the image's short name, also its archive's base name and the
	// argument hack/imagebuild takes to build it alone.
	Name string
	// Ref is the full reference the image is imported under.
	Ref string
}

// Archive is the image's archive under the repository's bin directory.
func (i Image) Archive(binDir string) string {
	return filepath.Join(binDir, "images", i.Name+".tar")
}

var (
	// Manager is the operator: the chart's default image.
	Manager = Image{Name: "manager", Ref: ManagerRepository + ":" + AppVersion}
	// Pause is the pod sandbox image: blocks until SIGTERM, reaps zombies.
	Pause = Image{Name: "pause", Ref: TestRegistry + "/pause:" + TestTag}
	// Dind is dockerd from Debian's packages, behaving like docker:dind.
	Dind = Image{Name: "dind", Ref: TestRegistry + "/dind:" + TestTag}
	// RunnerStandin plays the Bitbucket runner against bbsim
	// (test/images/runner-standin, docs/adr/0015-runner-standin.md).
	RunnerStandin = Image{Name: "runner-standin", Ref: TestRegistry + "/runner-standin:" + TestTag}
	// Step is the image the stand-in runs steps in, inside dind: busybox.
	// RunnerStandin carries it and loads it into dind at start.
	Step = Image{Name: "step", Ref: TestRegistry + "/step:" + TestTag}
)

// All is every image, in the order `make images` builds them.
var All = []Image{Manager, Pause, Dind, Step, RunnerStandin}

// Check says how to get the image's archive when it is missing, so that a
// test fails with what to do rather than with an import error.
func (i Image) Check(binDir string) error {
	p := i.Archive(binDir)
	if _, err := os.Stat(p); err != nil {
		return fmt.Errorf("image %s: archive %s missing: run `make images` (%w)", i.Ref, p, err)
	}
	return nil
}

// Platform is the os/architecture the images are built for: the machine's.
func Platform() (os, arch string) { return "linux", runtime.GOARCH }
