// Command crdbounds gives every 32-bit integer of the generated CRDs the range of its Go type
// (make generate runs it after controller-gen; see package bounds for why).
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/runnerpool/runnerpool-operator/hack/crdbounds/bounds"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "crdbounds:", err)
		os.Exit(1)
	}
}

func run(dirs []string) error {
	for _, dir := range dirs {
		files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
		if err != nil {
			return err
		}
		for _, f := range files {
			doc, err := os.ReadFile(f)
			if err != nil {
				return err
			}
			if err := os.WriteFile(f, bounds.Apply(doc), 0o644); err != nil {
				return fmt.Errorf("write %s: %w", f, err)
			}
		}
	}
	return nil
}
