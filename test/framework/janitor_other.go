//go:build !linux

package framework

// Without /proc there is no portable way to find a dead owner's programs; a
// killed test binary leaves them running (see childProcAttr).

func writeOwner(string) error { return nil }

func reapAbandoned() {}

func killProcessesUsing(string) {}
