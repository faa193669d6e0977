package framework

import (
	"os/exec"
	"runtime"
	"sync"
	"syscall"
)

// childProcAttr puts each program in its own process group (so stop reaches its
// helpers too) and asks the kernel to kill it if this process dies, so a test
// binary killed by a timeout leaves nothing running.
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// The kernel sends Pdeathsig when the thread that forked the child exits, not the
// process. Forking from one goroutine locked to a thread that never exits ties
// the signal to the life of the process instead.
var (
	spawnerOnce     sync.Once
	spawnerRequests chan spawnRequest
)

type spawnRequest struct {
	cmd    *exec.Cmd
	result chan error
}

func startCommand(cmd *exec.Cmd) error {
	spawnerOnce.Do(func() {
		spawnerRequests = make(chan spawnRequest)
		go func() {
			runtime.LockOSThread()
			for req := range spawnerRequests {
				req.result <- req.cmd.Start()
			}
		}()
	})
	result := make(chan error, 1)
	spawnerRequests <- spawnRequest{cmd: cmd, result: result}
	return <-result
}
