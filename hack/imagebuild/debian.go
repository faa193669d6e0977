package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"
)

// Images with a userland take it from Debian's packages, the ones the host's
// apt sources name: the package set is the closure apt resolves for a few
// packages on an empty system, each package is unpacked with dpkg-deb, and no
// maintainer script runs (the tree is finished by the image's own code).
//
// A tree is cached per machine under its package set's key, so only a change
// of the package lists (apt-get update that brings a new version) or of the
// request rebuilds it.

// debianTree is a request for a tree of packages.
type debianTree struct {
	name     string
	packages []string
	// drop are packages of the closure the image does not need: dependencies of
	// maintainer scripts that never run here (perl, debconf, adduser, ...).
	drop []string
	// finish completes the unpacked tree; recipe names its version in the key.
	finish func(root string) error
	recipe string
}

// debPackage is one package of a resolved set.
type debPackage struct{ name, version, arch string }

func (p debPackage) String() string { return p.name + "=" + p.version + ":" + p.arch }

var instLine = regexp.MustCompile(`^Inst (\S+) (?:\[\S+\] )?\((\S+) .*\[(\S+)\]\)`)

// resolve asks apt which packages the request needs on a system with nothing
// installed, without installing or downloading anything.
func (t debianTree) resolve(ctx context.Context, work string) ([]debPackage, error) {
	status := filepath.Join(work, "dpkg-status-empty")
	if err := os.WriteFile(status, nil, 0o644); err != nil {
		return nil, err
	}
	args := append([]string{"-s", "-q", "-o", "Dir::State::status=" + status, "-o", "APT::Install-Recommends=false", "install"}, t.packages...)
	out, err := output(ctx, "", append(os.Environ(), "LC_ALL=C"), "apt-get", args...)
	if err != nil {
		return nil, fmt.Errorf("resolve Debian packages (run apt-get update if the lists are missing): %w", err)
	}
	var pkgs []debPackage
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		m := instLine.FindStringSubmatch(sc.Text())
		if m == nil || slices.Contains(t.drop, m[1]) {
			continue
		}
		pkgs = append(pkgs, debPackage{m[1], m[2], m[3]})
	}
	if len(pkgs) == 0 {
		return nil, fmt.Errorf("apt resolved no package for %v:\n%s", t.packages, out)
	}
	sort.Slice(pkgs, func(i, j int) bool { return pkgs[i].name < pkgs[j].name })
	return pkgs, nil
}

// aptListsKey summarises the host's package lists by name, size and time: if
// they are unchanged, apt resolves the same versions, so the cache is looked up
// without asking apt (a resolve costs seconds).
func aptListsKey() string {
	h := sha256.New()
	files, _ := filepath.Glob("/var/lib/apt/lists/*Packages*")
	sort.Strings(files)
	for _, f := range files {
		if fi, err := os.Stat(f); err == nil {
			fmt.Fprintf(h, "%s %d %d\n", f, fi.Size(), fi.ModTime().UnixNano())
		}
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

func (t debianTree) requestKey() string {
	h := sha256.New()
	fmt.Fprintln(h, t.name, t.recipe, strings.Join(t.packages, " "), strings.Join(t.drop, " "), aptListsKey())
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// build returns the tree's directory and its package set, from the cache
// when the package lists have not changed.
func (t debianTree) build(ctx context.Context, b *build) (string, []debPackage, error) {
	if _, err := os.Stat("/var/lib/apt/lists"); err != nil {
		return "", nil, fmt.Errorf("image %s is made of Debian packages and needs apt: %w", t.name, err)
	}
	// A fresh machine (a CI container) may have no package lists yet.
	if lists, _ := filepath.Glob("/var/lib/apt/lists/*Packages*"); len(lists) == 0 {
		fmt.Fprintln(os.Stderr, "imagebuild: no apt package lists: apt-get update")
		if err := runCmd(ctx, "", os.Environ(), "apt-get", "update", "-q"); err != nil {
			return "", nil, fmt.Errorf("image %s: %w", t.name, err)
		}
	}
	root := filepath.Join(b.cacheDir, "trees")
	// The request's key points at the tree of the package set it resolved to.
	link := filepath.Join(root, t.name+"-request-"+t.requestKey())
	if dir, err := os.Readlink(link); err == nil {
		if pkgs, err := readPackages(filepath.Join(root, dir)); err == nil {
			t.prune(root, dir)
			return filepath.Join(root, dir, "rootfs"), pkgs, nil
		}
	}
	pkgs, err := t.resolve(ctx, b.work)
	if err != nil {
		return "", nil, err
	}
	h := sha256.New()
	fmt.Fprintln(h, t.name, t.recipe)
	for _, p := range pkgs {
		fmt.Fprintln(h, p)
	}
	name := t.name + "-" + hex.EncodeToString(h.Sum(nil))[:16]
	entry := filepath.Join(root, name)
	if _, err := os.Stat(filepath.Join(entry, ".complete")); err != nil {
		if err := t.unpack(ctx, b, pkgs, entry); err != nil {
			return "", nil, err
		}
	}
	_ = os.Remove(link)
	if err := os.Symlink(name, link); err != nil && !os.IsExist(err) {
		return "", nil, err
	}
	t.prune(root, name)
	return filepath.Join(entry, "rootfs"), pkgs, nil
}

// prune removes the trees of this image other than current, the request
// links to them and the layers packed from them, once they are an hour old:
// a package update or a new recipe leaves a tree of a few hundred MB behind
// otherwise.
func (t debianTree) prune(root, current string) {
	entries, err := os.ReadDir(root)
	if err != nil {
		return
	}
	for _, e := range entries {
		n := e.Name()
		if !strings.HasPrefix(n, t.name+"-") || n == current {
			continue
		}
		if strings.HasPrefix(n, t.name+"-request-") {
			if target, err := os.Readlink(filepath.Join(root, n)); err == nil && target != current {
				_ = os.Remove(filepath.Join(root, n))
			}
			continue
		}
		// Another checkout on another recipe may be using a recent one.
		if info, err := e.Info(); err == nil && time.Since(info.ModTime()) > time.Hour {
			_ = os.RemoveAll(filepath.Join(root, n))
		}
	}
	if LayerCache == "" {
		return
	}
	layers, _ := filepath.Glob(filepath.Join(LayerCache, "layer-"+t.name+"-*"))
	for _, l := range layers {
		info, err := os.Stat(l)
		if err == nil && !strings.HasPrefix(filepath.Base(l), "layer-"+current+"-") && time.Since(info.ModTime()) > time.Hour {
			_ = os.Remove(l)
		}
	}
}

func readPackages(entry string) ([]debPackage, error) {
	if _, err := os.Stat(filepath.Join(entry, ".complete")); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(entry, "packages"))
	if err != nil {
		return nil, err
	}
	var pkgs []debPackage
	for _, l := range strings.Fields(string(b)) {
		name, rest, _ := strings.Cut(l, "=")
		i := strings.LastIndex(rest, ":")
		if i < 0 {
			return nil, fmt.Errorf("bad package line %q", l)
		}
		pkgs = append(pkgs, debPackage{name, rest[:i], rest[i+1:]})
	}
	return pkgs, nil
}

// unpack downloads the packages missing from the cache, unpacks them into a
// temporary tree, finishes it and renames it into place.
func (t debianTree) unpack(ctx context.Context, b *build, pkgs []debPackage, entry string) error {
	debs := filepath.Join(b.cacheDir, "debs")
	if err := os.MkdirAll(debs, 0o755); err != nil {
		return err
	}
	var missing []string
	files := map[string]string{}
	for _, p := range pkgs {
		// apt names a download name_version_arch.deb, with the epoch's colon escaped.
		f := filepath.Join(debs, p.name+"_"+strings.ReplaceAll(p.version, ":", "%3a")+"_"+p.arch+".deb")
		files[p.name] = f
		if _, err := os.Stat(f); err != nil {
			missing = append(missing, p.name+"="+p.version)
		}
	}
	if len(missing) > 0 {
		fmt.Fprintf(os.Stderr, "imagebuild: downloading %d Debian packages for %s\n", len(missing), t.name)
		// Downloading as root into a directory _apt cannot write is fine: the
		// warning apt prints about it is noise.
		if err := runCmd(ctx, debs, os.Environ(), "apt-get", append([]string{"download", "-q", "-o", "APT::Sandbox::User=root"}, missing...)...); err != nil {
			return fmt.Errorf("download Debian packages: %w", err)
		}
	}
	if err := os.MkdirAll(filepath.Dir(entry), 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(entry), ".tmp-"+t.name+"-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	rootfs := filepath.Join(tmp, "rootfs")
	if err := os.Mkdir(rootfs, 0o755); err != nil {
		return err
	}
	var list strings.Builder
	for _, p := range pkgs {
		if err := runCmd(ctx, "", os.Environ(), "dpkg-deb", "-x", files[p.name], rootfs); err != nil {
			return err
		}
		fmt.Fprintln(&list, p)
	}
	if err := t.finish(rootfs); err != nil {
		return fmt.Errorf("finish %s tree: %w", t.name, err)
	}
	if err := os.WriteFile(filepath.Join(tmp, "packages"), []byte(list.String()), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(tmp, ".complete"), nil, 0o644); err != nil {
		return err
	}
	_ = os.RemoveAll(entry)
	return os.Rename(tmp, entry)
}
