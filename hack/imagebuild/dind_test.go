package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// The entrypoint is a shell script inside a Go string: it must at least parse.
func TestDindEntrypointParses(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Fatalf("no sh to check the entrypoint with: %v", err)
	}
	p := filepath.Join(t.TempDir(), "entrypoint.sh")
	if err := os.WriteFile(p, []byte(dindEntrypoint), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(sh, "-n", p).CombinedOutput(); err != nil {
		t.Fatalf("sh -n: %v\n%s", err, out)
	}
}

// Other commands than dockerd run as they are: the rootless mode's init
// container runs chown with the dind image.
func TestDindEntrypointRunsOtherCommands(t *testing.T) {
	p := filepath.Join(t.TempDir(), "entrypoint.sh")
	if err := os.WriteFile(p, []byte(dindEntrypoint), 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("sh", p, "echo", "ran").CombinedOutput()
	if err != nil || string(out) != "ran\n" {
		t.Fatalf("entrypoint echo ran: %q, %v", out, err)
	}
}

func TestAptSimulationLines(t *testing.T) {
	tests := []struct {
		line string
		want *debPackage
	}{
		{"Inst docker.io (20.10.24+dfsg1-1+deb12u1+b6 Debian:12.11/stable [amd64])", &debPackage{"docker.io", "20.10.24+dfsg1-1+deb12u1+b6", "amd64"}},
		{"Inst busybox-static (1:1.35.0-4+deb12u1+b1 Debian:12.11/stable, Debian-Security:12/stable-security [amd64])", &debPackage{"busybox-static", "1:1.35.0-4+deb12u1+b1", "amd64"}},
		{"Inst libc6 [2.36-9+deb12u9] (2.36-9+deb12u10 Debian:12.11/stable [amd64])", &debPackage{"libc6", "2.36-9+deb12u10", "amd64"}},
		{"Conf docker.io (20.10.24+dfsg1-1+deb12u1+b6 Debian:12.11/stable [amd64])", nil},
		{"NOTE: This is only a simulation!", nil},
	}
	for _, tt := range tests {
		m := instLine.FindStringSubmatch(tt.line)
		switch {
		case tt.want == nil && m != nil:
			t.Errorf("%q matched: %v", tt.line, m)
		case tt.want != nil && (m == nil || (debPackage{m[1], m[2], m[3]}) != *tt.want):
			t.Errorf("%q: got %v, want %v", tt.line, m, *tt.want)
		}
	}
}
