package main

import (
	"context"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// stepTree is Debian's static busybox: a shell and the usual tools in one
// file, for the steps the runner stand-in runs inside dind.
var stepTree = debianTree{
	name:     "step",
	packages: []string{"busybox-static"},
	recipe:   "step-1",
	finish:   func(string) error { return nil },
}

// stepImage is busybox with a link for each of its applets.
func stepImage(ctx context.Context, b *build) (Image, error) {
	root, _, err := stepTree.build(ctx, b)
	if err != nil {
		return Image{}, err
	}
	busybox := filepath.Join(root, "bin", "busybox")
	// The binary is static and of the build machine's architecture, so it
	// lists its own applets.
	list, err := output(ctx, "", nil, busybox, "--list-full")
	if err != nil {
		return Image{}, err
	}
	entries := []Entry{
		{Path: "/bin/busybox", Source: busybox, Mode: 0o755},
		File("/etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")),
		File("/etc/group", 0o644, []byte("root:x:0:\nnogroup:x:65534:\n")),
		Dir("/root", 0o700),
		Dir("/tmp", 0o777|os.ModeSticky),
	}
	for _, applet := range strings.Fields(list) {
		p := "/" + applet
		if p == "/bin/busybox" {
			continue
		}
		rel, err := filepath.Rel(path.Dir(p), "/bin/busybox")
		if err != nil {
			return Image{}, err
		}
		entries = append(entries, Symlink(p, rel))
	}
	return Image{
		Config: Config{
			Cmd:    []string{"sh"},
			Env:    []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
			Labels: b.labels("step", "Busybox from Debian's busybox-static, the build step image of runnerpool-operator's tests."),
		},
		Layers: []Layer{{Comment: "busybox-static", Entries: entries}},
	}, nil
}
