package framework

import "testing"

func TestExpandVars(t *testing.T) {
	vars := map[string]string{"POD_NAMESPACE": "rp-system", "EMPTY": ""}
	tests := []struct{ in, want string }{
		{"--leader-election-namespace=$(POD_NAMESPACE)", "--leader-election-namespace=rp-system"},
		{"$(EMPTY)x", "x"},
		{"$(UNKNOWN)", "$(UNKNOWN)"},
		{"$$(POD_NAMESPACE)", "$(POD_NAMESPACE)"},
		{"plain", "plain"},
	}
	for _, tt := range tests {
		if got := expandVars(tt.in, vars); got != tt.want {
			t.Errorf("expandVars(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestRewriteAddress(t *testing.T) {
	ports := map[int32]int{8080: 41000, 8081: 41001}
	tests := []struct{ in, want string }{
		{"--metrics-bind-address=:8080", "--metrics-bind-address=127.0.0.1:41000"},
		{"--health-probe-bind-address=0.0.0.0:8081", "--health-probe-bind-address=127.0.0.1:41001"},
		{":8080", "127.0.0.1:41000"},
		{"--webhook-bind-address=0", "--webhook-bind-address=0"},
		{"--webhook-bind-address=:8082", "--webhook-bind-address=:8082"},
		{"--bitbucket-api-url=http://127.0.0.1:8080", "--bitbucket-api-url=http://127.0.0.1:8080"},
		{"--leader-elect", "--leader-elect"},
	}
	for _, tt := range tests {
		if got := rewriteAddress(tt.in, ports); got != tt.want {
			t.Errorf("rewriteAddress(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestImageName(t *testing.T) {
	tests := []struct{ in, want string }{
		{"ghcr.io/runnerpool/runnerpool-operator:0.1.0", "ghcr.io/runnerpool/runnerpool-operator"},
		{"registry.k8s.io/kubectl", "registry.k8s.io/kubectl"},
		{"localhost:5000/kubectl:v1", "localhost:5000/kubectl"},
		{"localhost:5000/kubectl", "localhost:5000/kubectl"},
		{"registry.k8s.io/kubectl@sha256:abc", "registry.k8s.io/kubectl"},
	}
	for _, tt := range tests {
		if got := imageName(tt.in); got != tt.want {
			t.Errorf("imageName(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
