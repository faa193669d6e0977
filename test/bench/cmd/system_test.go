package main

import "testing"

func TestResourceOf(t *testing.T) {
	tests := []struct{ path, want string }{
		{"/api/v1/namespaces/team-1/pods", "pods"},
		{"/api/v1/namespaces/team-1/pods/fleet-abcde", "pods"},
		{"/api/v1/namespaces/team-1/pods/fleet-abcde/status", "pods/status"},
		{"/apis/ci.runnerpool.dev/v1alpha1/namespaces/team-1/runners/fleet-abcde/status", "runners/status"},
		{"/apis/ci.runnerpool.dev/v1alpha1/runnerpools", "runnerpools"},
		{"/apis/events.k8s.io/v1/namespaces/team-1/events", "events"},
		{"/api/v1/namespaces/team-1", "namespaces"},
		{"/api/v1/nodes/kwok-node-1", "nodes"},
		{"/healthz", "/healthz"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			if got := resourceOf(tt.path); got != tt.want {
				t.Errorf("resourceOf(%q) = %q, want %q", tt.path, got, tt.want)
			}
		})
	}
}
