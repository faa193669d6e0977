// Command chart regenerates the values table in the chart's README.md from the
// `# --` comments in its values.yaml (make chart-sync runs it).
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/runnerpool/runnerpool-operator/hack/chart/valuesdoc"
)

func main() {
	chartDir := flag.String("chart", filepath.Join("charts", "runnerpool-operator"), "Chart directory.")
	flag.Parse()
	if err := run(*chartDir); err != nil {
		fmt.Fprintln(os.Stderr, "chart:", err)
		os.Exit(1)
	}
}

func run(chartDir string) error {
	values, err := os.ReadFile(filepath.Join(chartDir, "values.yaml"))
	if err != nil {
		return fmt.Errorf("read values: %w", err)
	}
	readmePath := filepath.Join(chartDir, "README.md")
	readme, err := os.ReadFile(readmePath)
	if err != nil {
		return fmt.Errorf("read README: %w", err)
	}
	updated, err := valuesdoc.Render(readme, values)
	if err != nil {
		return fmt.Errorf("%s: %w", chartDir, err)
	}
	if err := os.WriteFile(readmePath, updated, 0o644); err != nil {
		return fmt.Errorf("write README: %w", err)
	}
	return nil
}
