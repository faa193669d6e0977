package operator

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/runnerpool/runnerpool-operator/"

// The packages' imports point downwards (docs/architecture.md): only the wiring imports the
// reconcilers, and the decision and the pod shape stay pure.
func TestImportsPointDownwards(t *testing.T) {
	pure := map[string]bool{"internal/scaling": true, "internal/runnerpod": true}
	impure := []string{"sigs.k8s.io/controller-runtime", "k8s.io/client-go", "net/http"}
	root := filepath.Join("..", "..")
	err := filepath.WalkDir(filepath.Join(root, "internal"), func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return err
		}
		rel, err := filepath.Rel(root, filepath.Dir(path))
		if err != nil {
			return err
		}
		pkg := filepath.ToSlash(rel)
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		for _, spec := range f.Imports {
			imp, _ := strconv.Unquote(spec.Path.Value)
			if pkg != "internal/operator" && (imp == module+"controllers" || imp == module+"internal/operator") {
				t.Errorf("%s imports %s: only internal/operator may import the reconcilers", path, imp)
			}
			for _, p := range impure {
				if pure[pkg] && (imp == p || strings.HasPrefix(imp, p+"/")) {
					t.Errorf("%s imports %s: %s must stay pure", path, imp, pkg)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
