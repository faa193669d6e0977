package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestMigrateAutoscaler(t *testing.T) {
	file := filepath.Join("..", "..", "internal", "migrate", "testdata", "runners_config.yaml")
	dir := t.TempDir()
	tests := []struct {
		name       string
		args       []string
		wantErr    string
		wantStdout []string
		wantStderr []string
		wantFiles  []string
	}{
		{
			name:       "pools on stdout, Secret and notes on stderr",
			args:       []string{"migrate-autoscaler", "-f", file, "--uuid", "acme={0b3f8a1e-2c4d-4e5f-8a9b-0c1d2e3f4a5b}", "--uuid", "web-app={5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d}"},
			wantStdout: []string{"kind: RunnerPool", "---\n", "name: runner-repository-group", "policy: PercentageIdle"},
			wantStderr: []string{"kubectl -n ci-runners create secret generic bitbucket-credentials", "# note:", "Stop runners-autoscaler"},
		},
		{
			name:      "one file per pool",
			args:      []string{"migrate-autoscaler", "-f", file, "--uuid", "acme={0b3f8a1e-2c4d-4e5f-8a9b-0c1d2e3f4a5b}", "--uuid", "web-app={5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d}", "--out-dir", dir},
			wantFiles: []string{"ci-runners-runner-group-1.yaml", "ci-runners-runner-repository-group.yaml"},
		},
		{
			name:    "a name without its UUID",
			args:    []string{"migrate-autoscaler", "-f", file},
			wantErr: `--uuid acme=`,
		},
		{name: "no subcommand", args: nil, wantErr: "subcommand"},
		{name: "no file", args: []string{"migrate-autoscaler"}, wantErr: "-f is required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(tt.args, strings.NewReader(""), &stdout, &stderr)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("%v\n%s", err, stderr.String())
			}
			for _, w := range tt.wantStdout {
				if !strings.Contains(stdout.String(), w) {
					t.Errorf("stdout lacks %q:\n%s", w, stdout.String())
				}
			}
			for _, w := range tt.wantStderr {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr.String())
				}
			}
			for _, f := range tt.wantFiles {
				if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
					t.Errorf("no %s: %v", f, err)
				}
			}
		})
	}
}
