// Command refdocs writes docs/reference.md, the RunnerPool and Runner API reference, from
// the generated CRDs (make docs runs it; test/docs fails when the file is stale).
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/runnerpool/runnerpool-operator/hack/refdocs/crdref"
)

func main() {
	root := flag.String("root", ".", "Repository root.")
	flag.Parse()
	if err := run(*root); err != nil {
		fmt.Fprintln(os.Stderr, "refdocs:", err)
		os.Exit(1)
	}
}

func run(root string) error {
	reference, err := crdref.Generate(root)
	if err != nil {
		return err
	}
	out := filepath.Join(root, filepath.FromSlash(crdref.OutputPath))
	if err := os.WriteFile(out, reference, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", crdref.OutputPath, err)
	}
	return nil
}
