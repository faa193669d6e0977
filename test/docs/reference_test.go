package docs_test

import (
	"bytes"
	"testing"

	"github.com/runnerpool/runnerpool-operator/hack/refdocs/crdref"
)

// docs/reference.md is generated from the CRDs; an API change without `make docs` fails here.
func TestReferenceIsUpToDate(t *testing.T) {
	want, err := crdref.Generate(repoRoot())
	if err != nil {
		t.Fatal(err)
	}
	got := readRepoFile(t, crdref.OutputPath)
	if !bytes.Equal(got, want) {
		t.Errorf("%s is stale: run make docs (after make generate) and commit the result", crdref.OutputPath)
	}
}
