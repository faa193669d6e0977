package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/runnerpool/runnerpool-operator/internal/bbsim"
)

// fakeDocker answers the Docker Engine API calls of a step on a unix socket.
// A container "runs" by reading the files its script names from its bind
// mount, on the host, so the test sees what a real step would have seen.
type fakeDocker struct {
	mu         sync.Mutex
	loaded     []byte
	containers map[string]containerConfig
	removed    []string
}

func (f *fakeDocker) serve(t *testing.T) string {
	sock := filepath.Join(t.TempDir(), "docker.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	f.containers = map[string]containerConfig{}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /_ping", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "OK") })
	mux.HandleFunc("POST /images/load", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		f.loaded = b
		f.mu.Unlock()
		_, _ = io.WriteString(w, `{"stream":"Loaded image: step:1\n"}`)
	})
	mux.HandleFunc("POST /containers/create", func(w http.ResponseWriter, r *http.Request) {
		var cfg containerConfig
		if err := json.NewDecoder(r.Body).Decode(&cfg); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		f.mu.Lock()
		id := fmt.Sprintf("c%d", len(f.containers)+1)
		f.containers[id] = cfg
		f.mu.Unlock()
		w.WriteHeader(http.StatusCreated)
		_ = json.NewEncoder(w).Encode(map[string]string{"Id": id})
	})
	mux.HandleFunc("POST /containers/{id}/start", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })
	mux.HandleFunc("POST /containers/{id}/wait", func(w http.ResponseWriter, r *http.Request) {
		code := 0
		if strings.Contains(f.config(r.PathValue("id")).Cmd[2], "exit 3") {
			code = 3
		}
		_ = json.NewEncoder(w).Encode(map[string]int{"StatusCode": code})
	})
	mux.HandleFunc("GET /containers/{id}/logs", func(w http.ResponseWriter, r *http.Request) {
		cfg := f.config(r.PathValue("id"))
		// "cat NAME": the file, as the container sees it at its working directory.
		out := []byte("no such file\n")
		if name, ok := strings.CutPrefix(strings.Fields(cfg.Cmd[2])[0]+" "+strings.Fields(cfg.Cmd[2])[1], "cat "); ok {
			src, _, _ := strings.Cut(cfg.HostConfig.Binds[0], ":")
			if b, err := os.ReadFile(filepath.Join(src, name)); err == nil {
				out = b
			}
		}
		var hdr [8]byte
		hdr[0] = 1
		binary.BigEndian.PutUint32(hdr[4:], uint32(len(out)))
		_, _ = w.Write(hdr[:])
		_, _ = w.Write(out)
	})
	mux.HandleFunc("DELETE /containers/{id}", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.removed = append(f.removed, r.PathValue("id"))
		f.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	})
	srv := &http.Server{Handler: mux}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "unix://" + sock
}

func (f *fakeDocker) config(id string) containerConfig {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.containers[id]
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestStandinRunsStepsAndStopsGracefully(t *testing.T) {
	sim := bbsim.New(bbsim.Options{})
	srv := httptest.NewServer(sim)
	t.Cleanup(func() { srv.Close(); sim.Close() })
	runner, err := sim.CreateRunner(bbsim.CreateRunnerRequest{Name: "standin", Labels: []string{"self.hosted", "linux"}})
	if err != nil {
		t.Fatal(err)
	}
	docker := &fakeDocker{}
	archive := filepath.Join(t.TempDir(), "step.tar")
	if err := os.WriteFile(archive, []byte("image archive"), 0o644); err != nil {
		t.Fatal(err)
	}
	workDir := t.TempDir()
	cfg := config{
		accountUUID: runner.Workspace, runnerUUID: runner.UUID,
		clientID: runner.ClientID, clientSecret: runner.ClientSecret,
		workDir: workDir, dockerHost: docker.serve(t), baseURL: srv.URL,
		stepArchive: archive, stepImage: "step:1",
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, cfg) }()

	status := func() string {
		for _, r := range sim.State().Runners {
			if r.UUID == runner.UUID {
				return r.Status
			}
		}
		return ""
	}
	waitFor(t, "runner ONLINE", func() bool { return status() == bbsim.StatusOnline })
	if string(docker.loaded) != "image archive" {
		t.Fatalf("loaded %q", docker.loaded)
	}

	ids, err := sim.Enqueue(bbsim.EnqueueRequest{Count: 2, Script: "cat greeting", Files: map[string]string{"greeting": "hello\n"}})
	if err != nil {
		t.Fatal(err)
	}
	failing, err := sim.Enqueue(bbsim.EnqueueRequest{Count: 1, Script: "exit 3 # cat x", Image: "other:2"})
	if err != nil {
		t.Fatal(err)
	}
	ids = append(ids, failing...)
	steps := map[string]bbsim.StepView{}
	waitFor(t, "three steps completed", func() bool {
		for _, id := range ids {
			st, _ := sim.Step(id)
			steps[id] = st
			if st.Status != "completed" {
				return false
			}
		}
		return true
	})
	for _, id := range ids[:2] {
		if st := steps[id]; st.Result != bbsim.ResultSuccessful || st.Log != "hello\n" || *st.ExitCode != 0 {
			t.Fatalf("step %s: %+v", id, st)
		}
	}
	if st := steps[ids[2]]; st.Result != bbsim.ResultFailed || *st.ExitCode != 3 {
		t.Fatalf("failing step: %+v", st)
	}

	cfg1 := docker.config("c1")
	dir := filepath.Join(workDir, strings.Trim(ids[0], "{}"), "build")
	if cfg1.Image != "step:1" || cfg1.WorkingDir != dir || len(cfg1.HostConfig.Binds) != 1 || cfg1.HostConfig.Binds[0] != dir+":"+dir {
		t.Fatalf("first step's container: %+v", cfg1)
	}
	if got := docker.config("c3").Image; got != "other:2" {
		t.Fatalf("third step's image %q", got)
	}
	if len(docker.removed) != 3 {
		t.Fatalf("containers removed: %v", docker.removed)
	}

	// Taken OFFLINE by bbsim, it connects again, as a runner does.
	if err := sim.DisconnectRunner(runner.UUID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "runner ONLINE again", func() bool { return status() == bbsim.StatusOnline })

	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the stand-in did not stop")
	}
	if got := status(); got != bbsim.StatusOffline {
		t.Fatalf("after stopping the runner is %s", got)
	}
}

func TestStepFilesStayInTheBuildDirectory(t *testing.T) {
	for _, name := range []string{"../x", "/etc/passwd", "a/../../x"} {
		if err := writeFiles(t.TempDir(), map[string]string{name: "x"}); err == nil {
			t.Errorf("%s was written", name)
		}
	}
	dir := t.TempDir()
	if err := writeFiles(dir, map[string]string{"a/b/c.txt": "x"}); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "a", "b", "c.txt")); err != nil || string(b) != "x" {
		t.Fatalf("read back %q, %v", b, err)
	}
}

func TestDemuxLimitsTheLog(t *testing.T) {
	var stream []byte
	for _, s := range []string{"hello ", "world"} {
		var hdr [8]byte
		hdr[0] = 2
		binary.BigEndian.PutUint32(hdr[4:], uint32(len(s)))
		stream = append(append(stream, hdr[:]...), s...)
	}
	got, err := demux(strings.NewReader(string(stream)), 8)
	if err != nil || got != "hello wo" {
		t.Fatalf("demux = %q, %v", got, err)
	}
}
