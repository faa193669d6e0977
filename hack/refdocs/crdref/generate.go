package crdref

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"k8s.io/apimachinery/pkg/runtime"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
)

// Paths of the inputs and the output, relative to the repository root.
const (
	CRDDir     = "config/crd/bases"
	OutputPath = "docs/reference.md"
	ownPackage = "github.com/runnerpool/runnerpool-operator/"
)

// Generate renders the reference of the CRDs in repoRoot's config/crd/bases, linking
// Kubernetes types to the API reference of the release the module builds against.
func Generate(repoRoot string) ([]byte, error) {
	files, err := filepath.Glob(filepath.Join(repoRoot, filepath.FromSlash(CRDDir), "*.yaml"))
	if err != nil || len(files) == 0 {
		return nil, fmt.Errorf("find CRDs in %s: none found (%v)", CRDDir, err)
	}
	crds := make([][]byte, 0, len(files))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("read CRD: %w", err)
		}
		crds = append(crds, b)
	}
	goMod, err := os.ReadFile(filepath.Join(repoRoot, "go.mod"))
	if err != nil {
		return nil, fmt.Errorf("read go.mod: %w", err)
	}
	minor, err := KubernetesMinor(goMod)
	if err != nil {
		return nil, err
	}
	scheme := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		return nil, fmt.Errorf("build scheme: %w", err)
	}
	return Render(crds, Options{Scheme: scheme, OwnPackage: ownPackage, KubernetesMinor: minor})
}

// KubernetesMinor reads the Kubernetes release ("v1.37") from the k8s.io/api requirement
// in go.mod (v0.37.x): the API types, and so the linked reference, are that release's.
func KubernetesMinor(goMod []byte) (string, error) {
	scanner := bufio.NewScanner(bytes.NewReader(goMod))
	for scanner.Scan() {
		fields := strings.Fields(strings.TrimPrefix(strings.TrimSpace(scanner.Text()), "require "))
		if len(fields) < 2 || fields[0] != "k8s.io/api" {
			continue
		}
		parts := strings.Split(strings.TrimPrefix(fields[1], "v"), ".")
		if len(parts) < 2 || parts[0] != "0" {
			return "", fmt.Errorf("go.mod: unexpected k8s.io/api version %s", fields[1])
		}
		return "v1." + parts[1], nil
	}
	return "", fmt.Errorf("go.mod: no k8s.io/api requirement")
}
