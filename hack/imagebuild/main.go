// Command imagebuild writes the project's container images as OCI archives
// into bin/images without a container engine or a registry: Go programs built
// static, files from the host's Debian packages, and layers made here with
// fixed times and owners, so the same inputs give the same digests
// (docs/adr/0013-images-without-a-registry.md).
//
//	go run ./hack/imagebuild -bin bin [-version 0.1.0] [-revision SHA] [NAME...]
//
// NAME is one of test/images' image names; none builds all of them.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/runnerpool/runnerpool-operator/test/images"
)

// builder knows how to make one image.
type builder func(ctx context.Context, b *build) (Image, error)

var builders = map[string]builder{
	images.Manager.Name:       managerImage,
	images.Pause.Name:         pauseImage,
	images.Dind.Name:          dindImage,
	images.Step.Name:          stepImage,
	images.RunnerStandin.Name: runnerStandinImage,
}

// build is one run's settings and scratch space.
type build struct {
	binDir   string
	version  string
	revision string
	source   string
	os, arch string
	work     string // scratch directory, removed at the end
	cacheDir string // per-machine cache of downloaded packages and rootfs trees
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "imagebuild:", err)
		os.Exit(1)
	}
}

func run() error {
	b := &build{}
	flag.StringVar(&b.binDir, "bin", "bin", "The repository's bin directory; archives go to its images/ directory.")
	flag.StringVar(&b.version, "version", images.AppVersion, "The manager's version: its --version output and image label.")
	flag.StringVar(&b.revision, "revision", "", "The source revision (git commit) for the images' labels.")
	flag.StringVar(&b.source, "source", "https://github.com/runnerpool/runnerpool-operator", "The source repository for the images' labels.")
	flag.StringVar(&b.cacheDir, "cache", defaultCacheDir(), "Per-machine cache of Debian packages and the trees made from them.")
	flag.Parse()
	b.os, b.arch = images.Platform()
	LayerCache = filepath.Join(b.cacheDir, "layers")

	names := flag.Args()
	if len(names) == 0 {
		for _, img := range images.All {
			names = append(names, img.Name)
		}
	}
	var targets []images.Image
	for _, n := range names {
		i := slices.IndexFunc(images.All, func(img images.Image) bool { return img.Name == n })
		if i < 0 || builders[n] == nil {
			return fmt.Errorf("unknown image %q", n)
		}
		targets = append(targets, images.All[i])
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	if b.work, err = os.MkdirTemp("", "imagebuild-"); err != nil {
		return err
	}
	defer os.RemoveAll(b.work)

	for _, t := range targets {
		start := time.Now()
		img, err := builders[t.Name](ctx, b)
		if err != nil {
			return fmt.Errorf("%s: %w", t.Name, err)
		}
		img.Ref, img.OS, img.Arch = t.Ref, b.os, b.arch
		out := t.Archive(b.binDir)
		digest, err := WriteArchive(img, out)
		if err != nil {
			return fmt.Errorf("%s: %w", t.Name, err)
		}
		fi, err := os.Stat(out)
		if err != nil {
			return err
		}
		fmt.Printf("%-15s %-50s %s %6.1f MB %5.1fs\n", t.Name, t.Ref, digest[:19], float64(fi.Size())/1e6, time.Since(start).Seconds())
	}
	return nil
}

func defaultCacheDir() string {
	if d := os.Getenv("RUNNERPOOL_IMAGES_CACHE"); d != "" {
		return d
	}
	d, err := os.UserCacheDir()
	if err != nil {
		d = os.TempDir()
	}
	return filepath.Join(d, "runnerpool-operator", "images")
}

// goBuild builds a static program for the image's platform and returns its path.
func (b *build) goBuild(ctx context.Context, pkg, name string, ldflags ...string) (string, error) {
	out := filepath.Join(b.work, name)
	args := []string{"build", "-trimpath", "-buildvcs=false", "-o", out,
		"-ldflags", strings.Join(append([]string{"-s", "-w"}, ldflags...), " "), pkg}
	if err := runCmd(ctx, "", append(os.Environ(), "CGO_ENABLED=0", "GOOS="+b.os, "GOARCH="+b.arch), goCmd(), args...); err != nil {
		return "", err
	}
	return out, nil
}

func goCmd() string {
	if g := os.Getenv("GO"); g != "" {
		return g
	}
	return "go"
}
