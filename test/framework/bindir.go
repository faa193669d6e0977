package framework

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// ErrBinariesMissing is returned (wrapped) by Start when the bin directory lacks a
// control plane binary; `make tools` puts them there.
var ErrBinariesMissing = errors.New("control plane binaries missing (run `make tools`)")

// requiredBinaries are the programs Start runs. kubectl is built alongside them
// but nothing here needs it.
var requiredBinaries = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"}

// ResolveBinDir returns the directory holding the control plane binaries: dir if
// given, else $KUBEBUILDER_ASSETS (what `make test` sets), else the bin/ directory
// beside the nearest go.mod above the working directory. It fails with
// ErrBinariesMissing when a binary is absent.
func ResolveBinDir(dir string) (string, error) {
	if dir == "" {
		dir = os.Getenv("KUBEBUILDER_ASSETS")
	}
	if dir == "" {
		moduleRoot, err := findModuleRoot()
		if err != nil {
			return "", err
		}
		dir = filepath.Join(moduleRoot, "bin")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("resolve bin directory %s: %w", dir, err)
	}
	var missing []string
	for _, name := range requiredBinaries {
		info, err := os.Stat(filepath.Join(abs, name))
		if err != nil || info.IsDir() || info.Mode().Perm()&0o111 == 0 {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return "", fmt.Errorf("%w: %s not found in %s", ErrBinariesMissing, strings.Join(missing, ", "), abs)
	}
	return abs, nil
}

func findModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find module root: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("find module root: no go.mod above the working directory: %w", ErrBinariesMissing)
		}
		dir = parent
	}
}
