// Command pause is the pod sandbox process of the test node: it holds the
// pod's namespaces open until it is told to stop, and as PID 1 of a pod that
// shares its process namespace it reaps the orphans that are re-parented to it.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "--version" {
		fmt.Println("pause (runnerpool-operator test image)")
		return
	}
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for sig := range sigs {
		switch sig {
		case syscall.SIGCHLD:
			if os.Getpid() == 1 {
				reap()
			}
		default:
			// The runtime stops the sandbox after its containers: nothing to wait for.
			os.Exit(0)
		}
	}
}

// reap collects every exited child; signals coalesce, so one SIGCHLD may stand
// for several.
func reap() {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}
