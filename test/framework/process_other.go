//go:build !linux

package framework

import (
	"os/exec"
	"syscall"
)

// childProcAttr puts each program in its own process group so stop reaches its
// helpers too. Outside Linux there is no parent-death signal and no /proc to
// find leftovers by, so a killed test binary leaves its programs running.
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

func startCommand(cmd *exec.Cmd) error {
	return cmd.Start()
}
