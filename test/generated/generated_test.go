// Package generated fails when the files controller-gen writes are stale: CRDs, RBAC and
// deepcopy must always be what `make generate` produces from the API types and markers.
package generated

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/runnerpool/runnerpool-operator/hack/crdbounds/bounds"
	"github.com/runnerpool/runnerpool-operator/test/harness"
)

func TestGeneratedFilesAreUpToDate(t *testing.T) {
	root := harness.RepoRoot()
	gen := filepath.Join(root, "bin", "controller-gen")
	if _, err := os.Stat(gen); err != nil {
		t.Fatalf("controller-gen not built (run make tools): %v", err)
	}
	out := t.TempDir()
	run := func(args ...string) []byte {
		t.Helper()
		cmd := exec.Command(gen, args...)
		cmd.Dir = root
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		b, err := cmd.Output()
		if err != nil {
			t.Fatalf("controller-gen %v: %v\n%s", args, err, stderr.String())
		}
		return b
	}
	run("crd", "rbac:roleName=runnerpool-operator", "paths=./api/...", "paths=./controllers/...",
		"output:crd:artifacts:config="+filepath.Join(out, "crd"), "output:rbac:artifacts:config="+filepath.Join(out, "rbac"))
	run("rbac:roleName=runnerpool-operator-metrics-auth", "paths=./internal/operator/...",
		"output:rbac:artifacts:config="+filepath.Join(out, "metrics_auth"))
	deepcopy := run("object:headerFile=hack/boilerplate.go.txt", "paths=./api/...", "output:object:stdout")
	if err := os.WriteFile(filepath.Join(out, "zz_generated.deepcopy.go"), deepcopy, 0o644); err != nil {
		t.Fatal(err)
	}

	compare := func(generated, committed string) {
		t.Helper()
		want, err := os.ReadFile(generated)
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(root, committed))
		if err != nil {
			t.Fatalf("%s: %v (run make generate)", committed, err)
		}
		if !bytes.Equal(want, got) {
			t.Errorf("%s is stale: run make generate and commit the result", committed)
		}
	}
	crds, _ := filepath.Glob(filepath.Join(out, "crd", "*.yaml"))
	if len(crds) != 2 {
		t.Fatalf("controller-gen wrote %d CRDs, want 2", len(crds))
	}
	for _, f := range crds {
		// make generate bounds the int32s controller-gen leaves open (hack/crdbounds).
		doc, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f, bounds.Apply(doc), 0o644); err != nil {
			t.Fatal(err)
		}
		compare(f, filepath.Join("config", "crd", "bases", filepath.Base(f)))
	}
	compare(filepath.Join(out, "rbac", "role.yaml"), filepath.Join("config", "rbac", "role.yaml"))
	compare(filepath.Join(out, "metrics_auth", "role.yaml"), filepath.Join("config", "rbac", "metrics_auth", "role.yaml"))
	compare(filepath.Join(out, "zz_generated.deepcopy.go"), filepath.Join("api", "v1alpha1", "zz_generated.deepcopy.go"))
}
