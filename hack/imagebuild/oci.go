package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"

	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// The OCI image-layout format (image-spec v1.1): an archive holding oci-layout,
// index.json and content-addressed blobs. containerd imports it as is
// (`ctr images import`), and so do podman, skopeo and crane.
const (
	mediaTypeIndex    = "application/vnd.oci.image.index.v1+json"
	mediaTypeManifest = "application/vnd.oci.image.manifest.v1+json"
	mediaTypeConfig   = "application/vnd.oci.image.config.v1+json"
	mediaTypeLayer    = "application/vnd.oci.image.layer.v1.tar+gzip"

	// annotationImageName is how containerd names an image it imports; the OCI
	// ref.name annotation carries the same reference for other tools.
	annotationImageName = "io.containerd.image.name"
	annotationRefName   = "org.opencontainers.image.ref.name"
)

// epoch is every file's and the config's timestamp, so that the same inputs
// give the same digests on any machine and at any time.
var epoch = time.Unix(0, 0).UTC()

// Entry is one file, directory or symlink of a layer. Content comes from Source
// (a host file, read when the layer is written) or Data; a Source directory is
// added with everything under it. Everything is owned by UID:GID (default 0:0).
type Entry struct {
	Path     string      // absolute path in the image
	Source   string      // host path; empty for Data, directories and symlinks
	Data     []byte      // file content when Source is empty
	Mode     fs.FileMode // permission bits (and fs.ModeDir, fs.ModeSymlink); 0 takes the source's
	Linkname string      // symlink target
	UID, GID int
}

// Dir is an empty directory entry.
func Dir(p string, perm fs.FileMode) Entry { return Entry{Path: p, Mode: fs.ModeDir | perm} }

// File is a regular file with the given content.
func File(p string, perm fs.FileMode, data []byte) Entry {
	return Entry{Path: p, Mode: perm, Data: data}
}

// Copy is a host file or directory tree placed at p.
func Copy(src, p string) Entry { return Entry{Path: p, Source: src} }

// Symlink is a symbolic link at p pointing to target.
func Symlink(p, target string) Entry {
	return Entry{Path: p, Mode: fs.ModeSymlink | 0o777, Linkname: target}
}

// Layer is a set of entries written as one layer. Entries are sorted by path
// and their parent directories are added, so the order they are given in does
// not matter.
type Layer struct {
	Entries []Entry
	// Comment becomes the config history's created_by, for `ctr image inspect`-like tools.
	Comment string
	// CacheKey, when set, names the layer's content: the compressed layer is
	// kept in LayerCache under it and reused instead of packing a large tree
	// again. The caller makes it change whenever the entries do.
	CacheKey string
}

// LayerCache is where layers with a CacheKey are kept; empty keeps none.
var LayerCache string

// packedLayer is a layer's compressed bytes and its uncompressed digest.
type packedLayer struct {
	gz     []byte
	diffID string
}

func packLayer(l Layer) (packedLayer, error) {
	var cached string
	if l.CacheKey != "" && LayerCache != "" {
		cached = filepath.Join(LayerCache, l.CacheKey)
		gz, errGz := os.ReadFile(cached + ".tar.gz")
		id, errID := os.ReadFile(cached + ".diffid")
		if errGz == nil && errID == nil {
			return packedLayer{gz, string(id)}, nil
		}
	}
	raw, err := layerTar(l.Entries)
	if err != nil {
		return packedLayer{}, err
	}
	gz, err := gzipBytes(raw)
	if err != nil {
		return packedLayer{}, err
	}
	p := packedLayer{gz, digestOf(raw)}
	if cached != "" {
		// The content goes in before the digest that marks it complete.
		if err := os.MkdirAll(LayerCache, 0o755); err != nil {
			return packedLayer{}, err
		}
		if err := writeFileAtomic(cached+".tar.gz", gz); err != nil {
			return packedLayer{}, err
		}
		if err := writeFileAtomic(cached+".diffid", []byte(p.diffID)); err != nil {
			return packedLayer{}, err
		}
	}
	return p, nil
}

func writeFileAtomic(name string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(name), "."+filepath.Base(name)+"-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), name)
}

// Config is the part of the OCI image config a container runtime acts on.
type Config struct {
	User         string              `json:"User,omitempty"`
	Env          []string            `json:"Env,omitempty"`
	Entrypoint   []string            `json:"Entrypoint,omitempty"`
	Cmd          []string            `json:"Cmd,omitempty"`
	WorkingDir   string              `json:"WorkingDir,omitempty"`
	Labels       map[string]string   `json:"Labels,omitempty"`
	StopSignal   string              `json:"StopSignal,omitempty"`
	Volumes      map[string]struct{} `json:"Volumes,omitempty"`
	ExposedPorts map[string]struct{} `json:"ExposedPorts,omitempty"`
}

// Image is a single-platform image to write.
type Image struct {
	Ref    string // full reference, e.g. ghcr.io/runnerpool/runnerpool-operator:0.1.0
	OS     string
	Arch   string
	Config Config
	Layers []Layer
}

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Platform    *platform         `json:"platform,omitempty"`
}

type platform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
}

type history struct {
	Created   time.Time `json:"created"`
	CreatedBy string    `json:"created_by,omitempty"`
}

type imageConfig struct {
	Created      time.Time `json:"created"`
	Architecture string    `json:"architecture"`
	OS           string    `json:"os"`
	Config       Config    `json:"config"`
	RootFS       struct {
		Type    string   `json:"type"`
		DiffIDs []string `json:"diff_ids"`
	} `json:"rootfs"`
	History []history `json:"history,omitempty"`
}

type manifest struct {
	SchemaVersion int               `json:"schemaVersion"`
	MediaType     string            `json:"mediaType"`
	Config        descriptor        `json:"config"`
	Layers        []descriptor      `json:"layers"`
	Annotations   map[string]string `json:"annotations,omitempty"`
}

type index struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Manifests     []descriptor `json:"manifests"`
}

type blob struct {
	digest string
	data   []byte
}

func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// WriteArchive writes img as an OCI image-layout tar to out (through a
// temporary file, so a failed build leaves no half archive) and returns the
// manifest digest.
func WriteArchive(img Image, out string) (string, error) {
	var blobs []blob
	cfg := imageConfig{Created: epoch, Architecture: img.Arch, OS: img.OS, Config: img.Config}
	cfg.RootFS.Type = "layers"
	cfg.RootFS.DiffIDs = []string{}
	m := manifest{SchemaVersion: 2, MediaType: mediaTypeManifest, Layers: []descriptor{}}
	for i, l := range img.Layers {
		p, err := packLayer(l)
		if err != nil {
			return "", fmt.Errorf("layer %d (%s): %w", i, l.Comment, err)
		}
		gz := p.gz
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, p.diffID)
		cfg.History = append(cfg.History, history{Created: epoch, CreatedBy: l.Comment})
		d := digestOf(gz)
		m.Layers = append(m.Layers, descriptor{MediaType: mediaTypeLayer, Digest: d, Size: int64(len(gz))})
		blobs = append(blobs, blob{d, gz})
	}
	cfgJSON, err := json.Marshal(cfg)
	if err != nil {
		return "", err
	}
	m.Config = descriptor{MediaType: mediaTypeConfig, Digest: digestOf(cfgJSON), Size: int64(len(cfgJSON))}
	blobs = append(blobs, blob{m.Config.Digest, cfgJSON})
	manJSON, err := json.Marshal(m)
	if err != nil {
		return "", err
	}
	manDigest := digestOf(manJSON)
	blobs = append(blobs, blob{manDigest, manJSON})
	idx := index{SchemaVersion: 2, MediaType: mediaTypeIndex, Manifests: []descriptor{{
		MediaType: mediaTypeManifest, Digest: manDigest, Size: int64(len(manJSON)),
		Annotations: map[string]string{annotationImageName: img.Ref, annotationRefName: img.Ref},
		Platform:    &platform{Architecture: img.Arch, OS: img.OS},
	}}}
	idxJSON, err := json.Marshal(idx)
	if err != nil {
		return "", err
	}
	// manifest.json is `docker save`'s index: Docker Engine before 25 loads
	// only that format (the runner stand-in loads the step image into a
	// Debian dockerd 20.10). containerd reads index.json when oci-layout is
	// present and ignores it.
	type dockerManifest struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	dm := []dockerManifest{{Config: blobPath(m.Config.Digest), RepoTags: []string{img.Ref}}}
	for _, l := range m.Layers {
		dm[0].Layers = append(dm[0].Layers, blobPath(l.Digest))
	}
	dmJSON, err := json.Marshal(dm)
	if err != nil {
		return "", err
	}

	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return "", err
	}
	tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+"-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	tw := tar.NewWriter(tmp)
	put := func(name string, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: epoch, Typeflag: tar.TypeReg, Format: tar.FormatPAX}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	if err := putDir(tw, "blobs/"); err != nil {
		return "", err
	}
	if err := putDir(tw, "blobs/sha256/"); err != nil {
		return "", err
	}
	seen := map[string]bool{}
	for _, b := range blobs {
		if seen[b.digest] {
			continue
		}
		seen[b.digest] = true
		if err := put(blobPath(b.digest), b.data); err != nil {
			return "", err
		}
	}
	if err := put("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return "", err
	}
	if err := put("index.json", idxJSON); err != nil {
		return "", err
	}
	if err := put("manifest.json", dmJSON); err != nil {
		return "", err
	}
	if err := tw.Close(); err != nil {
		return "", err
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	// CreateTemp makes the file 0600; an archive is read by other users (a
	// rootless daemon, a container runtime).
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return "", err
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return "", err
	}
	return manDigest, nil
}

func blobPath(digest string) string { return "blobs/sha256/" + strings.TrimPrefix(digest, "sha256:") }

func putDir(tw *tar.Writer, name string) error {
	return tw.WriteHeader(&tar.Header{Name: name, Mode: 0o755, ModTime: epoch, Typeflag: tar.TypeDir, Format: tar.FormatPAX})
}

func gzipBytes(raw []byte) ([]byte, error) {
	var buf bytes.Buffer
	// No name and a zero ModTime in the header: the output depends on the input only.
	zw, err := gzip.NewWriterLevel(&buf, gzip.DefaultCompression)
	if err != nil {
		return nil, err
	}
	if _, err := zw.Write(raw); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// node is one path of a layer after expanding Sources.
type node struct {
	hdr  tar.Header
	src  string // host file to read, for a regular file from a Source
	data []byte
}

// layerTar expands the entries and writes them as an uncompressed tar, sorted
// by path, with fixed times and the entries' owners: only paths, modes,
// contents and link targets reach the output.
func layerTar(entries []Entry) ([]byte, error) {
	nodes := map[string]*node{}
	for _, e := range entries {
		if !path.IsAbs(e.Path) {
			return nil, fmt.Errorf("%q is not absolute", e.Path)
		}
		if err := expand(nodes, e); err != nil {
			return nil, err
		}
	}
	// Every parent directory exists, root-owned and 0755 unless given.
	for p := range nodes {
		for d := path.Dir(p); d != "/"; d = path.Dir(d) {
			if _, ok := nodes[d]; !ok {
				nodes[d] = &node{hdr: tar.Header{Typeflag: tar.TypeDir, Mode: 0o755}}
			}
		}
	}
	paths := make([]string, 0, len(nodes))
	for p := range nodes {
		paths = append(paths, p)
	}
	sort.Strings(paths)

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	// Hard links of a Source tree (dpkg ships a few) stay links, as in the package.
	inodes := map[[2]uint64]string{}
	for _, p := range paths {
		n := nodes[p]
		h := n.hdr
		h.Name = strings.TrimPrefix(p, "/")
		if h.Typeflag == tar.TypeDir {
			h.Name += "/"
		}
		h.ModTime = epoch
		h.Format = tar.FormatPAX
		var data []byte
		if h.Typeflag == tar.TypeReg {
			data = n.data
			if n.src != "" {
				fi, err := os.Lstat(n.src)
				if err != nil {
					return nil, err
				}
				if key, ok := inodeKey(fi); ok {
					if first, dup := inodes[key]; dup {
						h.Typeflag = tar.TypeLink
						h.Linkname = first
						h.Size = 0
						if err := tw.WriteHeader(&h); err != nil {
							return nil, err
						}
						continue
					}
					inodes[key] = h.Name
				}
				if data, err = os.ReadFile(n.src); err != nil {
					return nil, err
				}
			}
			h.Size = int64(len(data))
		}
		if err := tw.WriteHeader(&h); err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		if len(data) > 0 {
			if _, err := tw.Write(data); err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func tarMode(m fs.FileMode) int64 {
	mode := int64(m.Perm())
	if m&fs.ModeSetuid != 0 {
		mode |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		mode |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		mode |= 0o1000
	}
	return mode
}

func expand(nodes map[string]*node, e Entry) error {
	p := path.Clean(e.Path)
	owner := func(h tar.Header) tar.Header { h.Uid, h.Gid = e.UID, e.GID; return h }
	if e.Source == "" {
		switch {
		case e.Mode&fs.ModeDir != 0:
			nodes[p] = &node{hdr: owner(tar.Header{Typeflag: tar.TypeDir, Mode: tarMode(e.Mode)})}
		case e.Mode&fs.ModeSymlink != 0:
			nodes[p] = &node{hdr: owner(tar.Header{Typeflag: tar.TypeSymlink, Mode: 0o777, Linkname: e.Linkname})}
		default:
			nodes[p] = &node{hdr: owner(tar.Header{Typeflag: tar.TypeReg, Mode: tarMode(e.Mode)}), data: e.Data}
		}
		return nil
	}
	root := filepath.Clean(e.Source)
	return filepath.WalkDir(root, func(src string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, src)
		if err != nil {
			return err
		}
		dst := path.Join(p, filepath.ToSlash(rel))
		if dst == "/" {
			return nil // a tree copied to the root: the root has no entry
		}
		fi, err := os.Lstat(src)
		if err != nil {
			return err
		}
		mode := fi.Mode()
		if src == root && e.Mode != 0 {
			mode = mode.Type() | e.Mode.Perm() | (e.Mode & (fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky))
		}
		switch {
		case mode.IsDir():
			nodes[dst] = &node{hdr: owner(tar.Header{Typeflag: tar.TypeDir, Mode: tarMode(mode)})}
		case mode&fs.ModeSymlink != 0:
			target, err := os.Readlink(src)
			if err != nil {
				return err
			}
			nodes[dst] = &node{hdr: owner(tar.Header{Typeflag: tar.TypeSymlink, Mode: 0o777, Linkname: target})}
		case mode.IsRegular():
			nodes[dst] = &node{hdr: owner(tar.Header{Typeflag: tar.TypeReg, Mode: tarMode(mode)}), src: src}
		default:
			return fmt.Errorf("%s: unsupported file type %s", src, mode.Type())
		}
		return nil
	})
}
