package main

import (
	"context"
	"path/filepath"

	"github.com/runnerpool/runnerpool-operator/test/images"
)

// runnerStandinImage is the runner stand-in with the step image's archive,
// which it loads into dind at start: the test node has no registry for dind
// to pull from.
func runnerStandinImage(ctx context.Context, b *build) (Image, error) {
	step, err := stepImage(ctx, b)
	if err != nil {
		return Image{}, err
	}
	step.Ref, step.OS, step.Arch = images.Step.Ref, b.os, b.arch
	stepArchive := filepath.Join(b.work, "step.tar")
	if _, err := WriteArchive(step, stepArchive); err != nil {
		return Image{}, err
	}
	bin, err := b.goBuild(ctx, "./test/images/runner-standin", "runner-standin")
	if err != nil {
		return Image{}, err
	}
	return Image{
		Config: Config{
			// Root, as Atlassian's runner image: it writes the build
			// directories and talks to the root-owned docker socket.
			User:       "0:0",
			Entrypoint: []string{"/runner-standin"},
			Env:        []string{"STEP_IMAGE_ARCHIVE=/images/step.tar", "STEP_IMAGE=" + images.Step.Ref},
			Labels:     b.labels("runner-standin", "Plays the Bitbucket Pipelines runner against bbsim in runnerpool-operator's tests."),
		},
		Layers: []Layer{
			{Comment: "base: CA bundle, users", Entries: baseEntries()},
			{Comment: "step image " + images.Step.Ref, Entries: []Entry{{Path: "/images/step.tar", Source: stepArchive, Mode: 0o644}}},
			{Comment: "runner-standin", Entries: []Entry{{Path: "/runner-standin", Source: bin, Mode: 0o755}}},
		},
	}, nil
}
