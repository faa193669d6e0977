// Command runnerpoolctl holds small tools around runnerpool-operator. Its one subcommand,
// migrate-autoscaler, turns the runners_config.yaml of Atlassian's runners-autoscaler into
// RunnerPools:
//
//	runnerpoolctl migrate-autoscaler -f runners_config.yaml [--uuid NAME={UUID}]... [--secret-name NAME] [--namespace NS] [--out-dir DIR]
//
// The pools go to stdout as one YAML stream, or into DIR one file each; what to create for the
// credentials and what was mapped approximately go to stderr.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/runnerpool/runnerpool-operator/internal/migrate"
)

func main() {
	if err := run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "runnerpoolctl:", err)
		os.Exit(1)
	}
}

const usage = `usage: runnerpoolctl migrate-autoscaler -f runners_config.yaml [flags]

Reads runners-autoscaler's runners_config.yaml (or its ConfigMap) and writes one RunnerPool per
group. Run with -h after the subcommand for its flags.`

// uuidFlag collects NAME={UUID} pairs.
type uuidFlag map[string]string

func (u uuidFlag) String() string { return "" }

func (u uuidFlag) Set(v string) error {
	name, uuid, ok := strings.Cut(v, "=")
	if !ok || name == "" || uuid == "" {
		return fmt.Errorf("want NAME={UUID}, got %q", v)
	}
	u[name] = uuid
	return nil
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "migrate-autoscaler" {
		fmt.Fprintln(stderr, usage)
		return errors.New("unknown or missing subcommand")
	}
	fs := flag.NewFlagSet("migrate-autoscaler", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("f", "", "runners_config.yaml, or the autoscaler's ConfigMap holding it (- for stdin)")
	uuids := uuidFlag{}
	fs.Var(uuids, "uuid", "NAME={UUID}: the UUID of a workspace or repository the file names (repeatable)")
	secretName := fs.String("secret-name", "bitbucket-credentials", "the credentials Secret the pools refer to")
	namespace := fs.String("namespace", "", "put every pool in this namespace instead of its group's")
	outDir := fs.String("out-dir", "", "write one file per pool into this directory instead of stdout")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if *file == "" {
		return errors.New("-f is required")
	}
	var data []byte
	var err error
	if *file == "-" {
		data, err = io.ReadAll(stdin)
	} else {
		data, err = os.ReadFile(*file)
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", *file, err)
	}
	res, err := migrate.Convert(data, migrate.Options{UUIDs: uuids, SecretName: *secretName, Namespace: *namespace})
	if err != nil {
		return err
	}
	if err := write(res, *outDir, stdout); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "# %d RunnerPools. Create the credentials Secret first, with the OAuth consumer runners-autoscaler used:\n%s",
		len(res.Pools), migrate.SecretCommands(res, *secretName))
	for _, n := range res.Notes {
		fmt.Fprintln(stderr, "# note:", n)
	}
	fmt.Fprintln(stderr, "# Stop runners-autoscaler before applying: its runners and the pools' would both count against Bitbucket's 100 per workspace or repository.")
	return nil
}

func write(res *migrate.Result, dir string, stdout io.Writer) error {
	if dir == "" {
		out, err := migrate.YAML(res.Pools)
		if err != nil {
			return err
		}
		_, err = stdout.Write(out)
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, p := range res.Pools {
		out, err := migrate.PoolYAML(p)
		if err != nil {
			return err
		}
		path := filepath.Join(dir, p.Namespace+"-"+p.Name+".yaml")
		if err := os.WriteFile(path, out, 0o644); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
		fmt.Fprintln(stdout, path)
	}
	return nil
}
