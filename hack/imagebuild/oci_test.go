package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// readArchive returns the archive's files by name.
func readArchive(t *testing.T, p string) map[string][]byte {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	files := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		files[h.Name] = b
	}
}

func testImage(t *testing.T, src string) Image {
	if err := os.Chmod(src, 0o755); err != nil {
		t.Fatal(err)
	}
	return Image{
		Ref: "example.com/test:1", OS: "linux", Arch: "amd64",
		Config: Config{Entrypoint: []string{"/bin/x"}, User: "65532:65532"},
		Layers: []Layer{{Comment: "one", Entries: []Entry{
			Copy(src, "/opt/src"),
			File("/etc/passwd", 0o644, []byte("root:x:0:0::/:/bin/x\n")),
			Dir("/tmp", fs.ModeSticky|0o777),
			Symlink("/bin/sh", "/bin/x"),
		}}},
	}
}

func TestSameInputsSameDigest(t *testing.T) {
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "a"), []byte("hello"), 0o755); err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	d1, err := WriteArchive(testImage(t, src), filepath.Join(out, "1.tar"))
	if err != nil {
		t.Fatal(err)
	}
	// Times and the host's owners must not matter.
	later := time.Now().Add(time.Hour)
	if err := os.Chtimes(filepath.Join(src, "a"), later, later); err != nil {
		t.Fatal(err)
	}
	d2, err := WriteArchive(testImage(t, src), filepath.Join(out, "2.tar"))
	if err != nil {
		t.Fatal(err)
	}
	if d1 != d2 {
		t.Fatalf("digests differ: %s, %s", d1, d2)
	}
	a, _ := os.ReadFile(filepath.Join(out, "1.tar"))
	b, _ := os.ReadFile(filepath.Join(out, "2.tar"))
	if !bytes.Equal(a, b) {
		t.Fatal("archives differ")
	}
	// Content does matter.
	if err := os.WriteFile(filepath.Join(src, "a"), []byte("hellO"), 0o755); err != nil {
		t.Fatal(err)
	}
	d3, err := WriteArchive(testImage(t, src), filepath.Join(out, "3.tar"))
	if err != nil {
		t.Fatal(err)
	}
	if d3 == d1 {
		t.Fatal("a content change kept the digest")
	}
}

func TestArchiveIsAnImportableLayout(t *testing.T) {
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "a"), []byte("hello"), 0o755); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "img.tar")
	digest, err := WriteArchive(testImage(t, src), out)
	if err != nil {
		t.Fatal(err)
	}
	files := readArchive(t, out)
	if string(files["oci-layout"]) != `{"imageLayoutVersion":"1.0.0"}` {
		t.Fatalf("oci-layout: %q", files["oci-layout"])
	}
	var idx index
	if err := json.Unmarshal(files["index.json"], &idx); err != nil {
		t.Fatal(err)
	}
	if len(idx.Manifests) != 1 {
		t.Fatalf("index has %d manifests", len(idx.Manifests))
	}
	md := idx.Manifests[0]
	// containerd names the image by this annotation, and without
	// --all-platforms it imports only a manifest of its own platform.
	if md.Digest != digest || md.Annotations[annotationImageName] != "example.com/test:1" ||
		md.Annotations[annotationRefName] != "example.com/test:1" ||
		md.Platform == nil || md.Platform.OS != "linux" || md.Platform.Architecture != "amd64" {
		t.Fatalf("index entry: %+v", md)
	}
	blob := func(d string) []byte {
		b, ok := files["blobs/sha256/"+d[len("sha256:"):]]
		if !ok {
			t.Fatalf("blob %s missing", d)
		}
		if digestOf(b) != d {
			t.Fatalf("blob %s has digest %s", d, digestOf(b))
		}
		return b
	}
	var m manifest
	if err := json.Unmarshal(blob(md.Digest), &m); err != nil {
		t.Fatal(err)
	}
	var cfg imageConfig
	if err := json.Unmarshal(blob(m.Config.Digest), &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.OS != "linux" || cfg.Architecture != "amd64" || cfg.Config.User != "65532:65532" || len(cfg.RootFS.DiffIDs) != 1 {
		t.Fatalf("config: %+v", cfg)
	}
	zr, err := gzip.NewReader(bytes.NewReader(blob(m.Layers[0].Digest)))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(zr)
	if digestOf(raw) != cfg.RootFS.DiffIDs[0] {
		t.Fatal("diff_id is not the digest of the uncompressed layer")
	}
	want := map[string]struct {
		typ  byte
		mode int64
	}{
		"bin/":       {tar.TypeDir, 0o755},
		"bin/sh":     {tar.TypeSymlink, 0o777},
		"etc/":       {tar.TypeDir, 0o755},
		"etc/passwd": {tar.TypeReg, 0o644},
		"opt/":       {tar.TypeDir, 0o755},
		"opt/src/":   {tar.TypeDir, 0o755},
		"opt/src/a":  {tar.TypeReg, 0o755},
		"tmp/":       {tar.TypeDir, 0o1777},
	}
	tr := tar.NewReader(bytes.NewReader(raw))
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		w, ok := want[h.Name]
		if !ok {
			t.Errorf("unexpected %s", h.Name)
			continue
		}
		if h.Typeflag != w.typ || h.Mode != w.mode || h.Uid != 0 || h.Gid != 0 || !h.ModTime.Equal(epoch) {
			t.Errorf("%s: type %c mode %o owner %d:%d time %s", h.Name, h.Typeflag, h.Mode, h.Uid, h.Gid, h.ModTime)
		}
	}
	if len(names) != len(want) {
		t.Errorf("layer has %v", names)
	}
}
