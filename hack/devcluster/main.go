// Command devcluster runs the local control plane of the tests (see
// test/framework) until interrupted, for the demo and for poking at by hand:
//
//	go run ./hack/devcluster --kubeconfig-out .run/kubeconfig --nodes 3
//
// It needs the binaries of `make tools` in bin/.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"k8s.io/apimachinery/pkg/api/resource"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/runnerpool/runnerpool-operator/test/framework"
)

func main() {
	log := funcr.New(func(prefix, args string) {
		fmt.Fprintln(os.Stderr, time.Now().Format(time.TimeOnly), prefix, args)
	}, funcr.Options{})
	// envtest logs through controller-runtime's logger, which otherwise
	// complains, after a while, that it was never set.
	ctrllog.SetLogger(log.WithName("envtest"))
	if err := run(log); err != nil {
		// Plain text: the error carries the programs' log lines.
		fmt.Fprintf(os.Stderr, "devcluster: %v\n", err)
		os.Exit(1)
	}
}

func run(log logr.Logger) error {
	var (
		opts          framework.Options
		kubeconfigOut string
		nodeCPU       = framework.DefaultNodeCPU.String()
		nodeMemory    = framework.DefaultNodeMemory.String()
	)
	flag.StringVar(&kubeconfigOut, "kubeconfig-out", ".run/kubeconfig", "where to write the administrator kubeconfig")
	flag.IntVar(&opts.Nodes, "nodes", framework.DefaultNodes, "fake nodes to create (0 for none)")
	flag.StringVar(&nodeCPU, "node-cpu", nodeCPU, "allocatable CPU of each fake node")
	flag.StringVar(&nodeMemory, "node-memory", nodeMemory, "allocatable memory of each fake node")
	flag.StringVar(&opts.LogDir, "log-dir", ".run/logs", "directory for the control plane programs' logs")
	flag.StringVar(&opts.BinDir, "bin-dir", "", "directory with the control plane binaries (default: bin/ of the repository, or $KUBEBUILDER_ASSETS)")
	flag.Func("crd", "file or directory of CustomResourceDefinitions to install (repeatable)", func(path string) error {
		opts.CRDDirectoryPaths = append(opts.CRDDirectoryPaths, path)
		return nil
	})
	flag.Parse()

	var err error
	if opts.NodeCPU, err = resource.ParseQuantity(nodeCPU); err != nil {
		return fmt.Errorf("parse --node-cpu %q: %w", nodeCPU, err)
	}
	if opts.NodeMemory, err = resource.ParseQuantity(nodeMemory); err != nil {
		return fmt.Errorf("parse --node-memory %q: %w", nodeMemory, err)
	}
	if opts.Nodes == 0 {
		opts.Nodes = -1 // the flag's 0 means none; Options' 0 means the default
	}
	opts.Logger = log

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	begin := time.Now()
	cp, err := framework.Start(ctx, opts)
	if err != nil {
		return err
	}
	log.Info("control plane ready", "elapsed", time.Since(begin).Round(time.Millisecond), "logs", cp.LogDir())

	stopErr := func() error {
		if err := writeKubeconfig(cp.KubeconfigPath, kubeconfigOut); err != nil {
			return err
		}
		absolute, _ := filepath.Abs(kubeconfigOut)
		fmt.Printf("\nControl plane running. Point kubectl at it with:\n\n  export KUBECONFIG=%s\n  kubectl get nodes\n\nPress Ctrl-C to stop.\n\n", absolute)
		<-ctx.Done()
		log.Info("stopping")
		return nil
	}()
	return errors.Join(stopErr, cp.Stop(), removeIfExists(kubeconfigOut))
}

// removeIfExists removes the copied kubeconfig: it points at a control plane
// that is gone.
func removeIfExists(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove kubeconfig %s: %w", path, err)
	}
	return nil
}

// writeKubeconfig copies the control plane's kubeconfig, which lives in its work
// directory and goes away on Stop, to where the user asked.
func writeKubeconfig(from, to string) error {
	data, err := os.ReadFile(from)
	if err != nil {
		return fmt.Errorf("read kubeconfig: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		return fmt.Errorf("create directory for kubeconfig: %w", err)
	}
	if err := os.WriteFile(to, data, 0o600); err != nil {
		return fmt.Errorf("write kubeconfig %s: %w", to, err)
	}
	return nil
}
