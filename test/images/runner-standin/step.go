package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// maxLog bounds the log a step reports.
const maxLog = 1 << 20

// defaultStepTimeout is Bitbucket's default maximum step time (120 minutes).
const defaultStepTimeout = 120 * time.Minute

// Step results, as bbsim records them.
const (
	resultSuccessful = "SUCCESSFUL"
	resultFailed     = "FAILED"
	resultError      = "ERROR"
)

// buildDir is where a step's files go: under WORKING_DIRECTORY, which the
// runner and dind mount at the same path, so a path the runner writes is the
// path the daemon bind-mounts.
func buildDir(workDir, stepUUID string) string {
	return filepath.Join(workDir, strings.Trim(stepUUID, "{}"), "build")
}

// writeFiles writes the step's files under dir, refusing paths that leave it.
func writeFiles(dir string, files map[string]string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if rel, err := filepath.Rel(dir, p); err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) || filepath.IsAbs(name) {
			return fmt.Errorf("file %q is outside the build directory", name)
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// runStep runs one step as a container of the step's image: its files
// written first, its build directory bind-mounted at the same path and made
// the working directory, its script run by sh -e. The container is removed
// whatever happens.
func runStep(ctx context.Context, d *dockerClient, workDir string, st stepJSON) stepResult {
	timeout := defaultStepTimeout
	if st.TimeoutSeconds > 0 {
		timeout = time.Duration(st.TimeoutSeconds) * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	fail := func(err error) stepResult { return stepResult{Result: resultError, ExitCode: -1, Log: err.Error()} }

	dir := buildDir(workDir, st.UUID)
	if err := writeFiles(dir, st.Files); err != nil {
		return fail(fmt.Errorf("write the step's files: %w", err))
	}
	name := "runner-step-" + strings.Trim(st.UUID, "{}")
	id, err := d.createContainer(ctx, name, containerConfig{
		Image:      st.Image,
		Cmd:        []string{"/bin/sh", "-ec", st.Script},
		WorkingDir: dir,
		Env:        []string{"BITBUCKET_CLONE_DIR=" + dir, "BITBUCKET_STEP_UUID=" + st.UUID, "CI=true"},
		Labels:     map[string]string{"runnerpool.dev/step": st.UUID},
		HostConfig: hostConfig{Binds: []string{dir + ":" + dir}},
	})
	if err != nil {
		return fail(fmt.Errorf("create the step container: %w", err))
	}
	defer func() {
		// A fresh context: the step's may have timed out.
		rctx, rcancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer rcancel()
		if err := d.removeContainer(rctx, id); err != nil {
			fmt.Fprintf(os.Stderr, "runner-standin: remove container %s: %v\n", id, err)
		}
	}()
	if err := d.startContainer(ctx, id); err != nil {
		return fail(fmt.Errorf("start the step container: %w", err))
	}
	code, waitErr := d.waitContainer(ctx, id)
	if ctx.Err() != nil {
		sctx, scancel := context.WithTimeout(context.Background(), 15*time.Second)
		_ = d.stopContainer(sctx, id)
		scancel()
	}
	lctx, lcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer lcancel()
	out, logErr := d.logs(lctx, id, maxLog)
	switch {
	case ctx.Err() != nil:
		return stepResult{Result: resultFailed, ExitCode: -1, Log: out + fmt.Sprintf("\nstep timed out after %s\n", timeout)}
	case waitErr != nil:
		return stepResult{Result: resultError, ExitCode: code, Log: out + "\n" + waitErr.Error()}
	case logErr != nil:
		out += "\nreading the log: " + logErr.Error()
	}
	res := stepResult{Result: resultSuccessful, ExitCode: code, Log: out}
	if code != 0 {
		res.Result = resultFailed
	}
	return res
}
