// Command runner-standin plays the Bitbucket Pipelines runner in the runner
// pods of the tests on the real node: as far as the pod can tell it does what
// the Atlassian runner does. It reads the environment the operator gives the
// runner container, authenticates with the runner's OAuth client, connects to
// bbsim and heartbeats as its runner, and runs each step it is given as a real
// container through the docker-in-docker socket, with the step's files written
// into a build directory under WORKING_DIRECTORY first and that directory
// bind-mounted at the same path.
//
// The runner's own protocol is private, so the stand-in speaks bbsim's agent
// API (internal/bbsim/agentapi.go, docs/adr/0015-runner-standin.md).
//
// Environment (the operator's, internal/runnerpod):
//
//	ACCOUNT_UUID, REPOSITORY_UUID, RUNNER_UUID, OAUTH_CLIENT_ID, OAUTH_CLIENT_SECRET,
//	WORKING_DIRECTORY, DOCKER_HOST (unix:// only)
//
// and the test's, through the pool's spec.runner.env:
//
//	BITBUCKET_URL        bbsim's base URL (required)
//	STEP_IMAGE_ARCHIVE   image archive loaded into dockerd at start (default /images/step.tar)
//	STEP_IMAGE           image of the steps that name none (the image sets it to the archive's)
//
// On SIGTERM it takes no more steps, finishes the step it is running, reports
// it, disconnects and exits 0.
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	log.SetFlags(log.LstdFlags | log.LUTC)
	log.SetPrefix("runner-standin: ")
	if len(os.Args) > 1 && os.Args[1] == "--version" {
		fmt.Println("runner-standin (runnerpool-operator test image)")
		return
	}
	if err := run(); err != nil {
		log.Print(err)
		os.Exit(1)
	}
}

type config struct {
	accountUUID, repositoryUUID, runnerUUID string
	clientID, clientSecret                  string
	workDir, dockerHost, baseURL            string
	stepArchive, stepImage                  string
}

func configFromEnv() (config, error) {
	c := config{
		accountUUID:    os.Getenv("ACCOUNT_UUID"),
		repositoryUUID: os.Getenv("REPOSITORY_UUID"),
		runnerUUID:     os.Getenv("RUNNER_UUID"),
		clientID:       os.Getenv("OAUTH_CLIENT_ID"),
		clientSecret:   os.Getenv("OAUTH_CLIENT_SECRET"),
		workDir:        os.Getenv("WORKING_DIRECTORY"),
		dockerHost:     os.Getenv("DOCKER_HOST"),
		baseURL:        os.Getenv("BITBUCKET_URL"),
		stepArchive:    os.Getenv("STEP_IMAGE_ARCHIVE"),
		stepImage:      os.Getenv("STEP_IMAGE"),
	}
	if c.stepArchive == "" {
		c.stepArchive = "/images/step.tar"
	}
	if c.dockerHost == "" {
		c.dockerHost = "unix:///var/run/docker.sock"
	}
	var missing []error
	for name, v := range map[string]string{
		"ACCOUNT_UUID": c.accountUUID, "RUNNER_UUID": c.runnerUUID, "OAUTH_CLIENT_ID": c.clientID,
		"OAUTH_CLIENT_SECRET": c.clientSecret, "WORKING_DIRECTORY": c.workDir, "BITBUCKET_URL": c.baseURL,
	} {
		if v == "" {
			missing = append(missing, fmt.Errorf("%s is not set", name))
		}
	}
	return c, errors.Join(missing...)
}

// Timing: the runner polls for work and heartbeats; bbsim marks it OFFLINE
// when heartbeats stop for longer than it says at connect.
const (
	pollInterval   = time.Second
	dockerWaitTime = 2 * time.Minute
)

func run() error {
	cfg, err := configFromEnv()
	if err != nil {
		return err
	}
	if cfg.stepImage == "" {
		return errors.New("STEP_IMAGE is not set")
	}
	// stopping ends the taking of steps; a running step is not interrupted:
	// the pod's grace period is the budget for finishing it.
	stopping, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return serve(stopping, cfg)
}

// serve runs the agent until stopping ends, then finishes the step it is
// running and disconnects.
func serve(stopping context.Context, cfg config) error {
	// Work that must finish even after SIGTERM (the step, its report).
	work := context.Background()

	docker, err := newDockerClient(cfg.dockerHost)
	if err != nil {
		return err
	}
	if err := docker.waitReady(stopping, dockerWaitTime); err != nil {
		return fmt.Errorf("docker at %s: %w", cfg.dockerHost, err)
	}
	if err := docker.loadImage(stopping, cfg.stepArchive); err != nil {
		return fmt.Errorf("load the step image from %s: %w", cfg.stepArchive, err)
	}
	log.Printf("docker ready at %s, step image loaded from %s", cfg.dockerHost, cfg.stepArchive)

	agent := newAgentClient(cfg)
	interval, err := agent.connect(stopping)
	if err != nil {
		if stopping.Err() != nil {
			return nil
		}
		return fmt.Errorf("connect to %s as runner %s: %w", cfg.baseURL, cfg.runnerUUID, err)
	}
	log.Printf("connected as runner %s; heartbeat every %s", cfg.runnerUUID, interval)

	hbCtx, hbStop := context.WithCancel(work)
	hbDone := make(chan struct{})
	go func() {
		defer close(hbDone)
		agent.heartbeatLoop(hbCtx, interval)
	}()
	defer func() {
		hbStop()
		<-hbDone
		ctx, cancel := context.WithTimeout(work, 5*time.Second)
		defer cancel()
		if err := agent.disconnect(ctx); err != nil {
			log.Printf("disconnect: %v", err)
		}
		log.Print("stopped")
	}()

	for {
		select {
		case <-stopping.Done():
			return nil
		case <-time.After(pollInterval):
		}
		st, err := agent.nextStep(stopping)
		if err != nil {
			if stopping.Err() == nil {
				log.Printf("poll for a step: %v", err)
			}
			continue
		}
		if st == nil {
			continue
		}
		if st.Image == "" {
			st.Image = cfg.stepImage
		}
		log.Printf("step %s: running in %s", st.UUID, st.Image)
		res := runStep(work, docker, cfg.workDir, *st)
		log.Printf("step %s: %s (exit code %d)", st.UUID, res.Result, res.ExitCode)
		if err := agent.complete(work, st.UUID, res); err != nil {
			log.Printf("step %s: report: %v", st.UUID, err)
		}
	}
}
