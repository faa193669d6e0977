package bbsim

import (
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

const pipelinesPath = "/2.0/repositories/demo/app/pipelines"

// pipelineWorld has three pipelines in demo/app: #1 with three parallel gpu
// steps (waiting: no gpu runner), #2 with one linux step (running), #3 with
// one linux step that completed.
func pipelineWorld(t *testing.T) (*testEnv, []string) {
	e := newEnv(t, Options{})
	r := e.createRunner(wsRunnersPath(DefaultWorkspaceUUID), "linux-runner")
	e.connect(r.UUID)
	done := e.enqueue(EnqueueRequest{Count: 1, Duration: time.Second})
	e.advance(time.Second)
	if st := e.step(done[0]); st.Result != ResultSuccessful {
		t.Fatalf("setup: %+v", st)
	}
	e.clock.Step(time.Second)
	gpu := e.enqueue(EnqueueRequest{Count: 3, RunsOn: []string{"self.hosted", "linux", "gpu"}, Duration: time.Minute})
	e.clock.Step(time.Second)
	running := e.enqueue(EnqueueRequest{Count: 1, Duration: time.Hour})
	// Build numbers: done #1, gpu #2, running #3.
	return e, []string{e.step(done[0]).Pipeline, e.step(gpu[0]).Pipeline, e.step(running[0]).Pipeline}
}

func TestListPipelinesFiltersAndSorts(t *testing.T) {
	e, ids := pipelineWorld(t)
	done, waiting, running := ids[0], ids[1], ids[2]
	cases := []struct {
		query string
		want  []string
	}{
		{"", []string{done, waiting, running}},
		{"/", []string{done, waiting, running}},
		{"?sort=-created_on", []string{running, waiting, done}},
		{"?status=PENDING", []string{waiting}},
		{"?status=IN_PROGRESS", []string{running}},
		{"?status=PENDING&status=BUILDING&status=IN_PROGRESS&sort=-created_on", []string{running, waiting}},
		{"?status=SUCCESSFUL", []string{done}},
		{"?status=FAILED", nil},
	}
	for _, tc := range cases {
		t.Run(tc.query, func(t *testing.T) {
			resp := e.do(http.MethodGet, pipelinesPath+tc.query, nil)
			if resp.status != http.StatusOK {
				t.Fatalf("status %d: %s", resp.status, resp.body)
			}
			var page pageJSON[pipelineJSON]
			resp.json(t, &page)
			var got []string
			for _, p := range page.Values {
				got = append(got, p.UUID)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
	for _, bad := range []string{"?sort=completed_on", "?status=WHATEVER"} {
		if resp := e.do(http.MethodGet, pipelinesPath+bad, nil); resp.status != http.StatusBadRequest {
			t.Errorf("%s: %d, want 400", bad, resp.status)
		}
	}
}

func TestPipelineAndStepShapes(t *testing.T) {
	e, ids := pipelineWorld(t)
	var done, waiting, running pipelineJSON
	e.do(http.MethodGet, pipelinesPath+"/"+ids[0], nil).json(t, &done)
	e.do(http.MethodGet, pipelinesPath+"/"+ids[1], nil).json(t, &waiting)
	e.do(http.MethodGet, "/2.0/repositories/"+DefaultWorkspaceUUID+"/"+DefaultRepositoryUUID+"/pipelines/"+ids[2], nil).json(t, &running)

	if done.Type != "pipeline" || done.State.Name != "COMPLETED" || done.State.Type != "pipeline_state_completed" ||
		done.State.Result == nil || done.State.Result.Type != "pipeline_state_completed_successful" || done.CompletedOn == "" {
		t.Errorf("completed pipeline: %+v", done)
	}
	if waiting.State.Name != "PENDING" || waiting.State.Type != "pipeline_state_pending" || waiting.CompletedOn != "" {
		t.Errorf("pending pipeline: %+v", waiting)
	}
	if running.State.Name != "IN_PROGRESS" || running.State.Stage == nil || running.State.Stage.Name != "RUNNING" {
		t.Errorf("running pipeline: %+v", running)
	}
	if len(waiting.Target.Commit.Hash) != 40 || waiting.Target.RefName == "" || waiting.Repository.UUID != DefaultRepositoryUUID || !bitbucketTimestamp.MatchString(waiting.CreatedOn) {
		t.Errorf("pipeline target/repository: %+v", waiting)
	}

	resp := e.do(http.MethodGet, pipelinesPath+"/"+ids[1]+"/steps/?pagelen=2", nil)
	var steps pageJSON[stepJSON]
	resp.json(t, &steps)
	if steps.Size != 3 || len(steps.Values) != 2 || steps.Next == "" {
		t.Fatalf("steps page: size %d, %d values, next %q", steps.Size, len(steps.Values), steps.Next)
	}
	pending := steps.Values[0]
	if pending.Type != "pipeline_step" || pending.State.Name != "PENDING" || pending.State.Type != "pipeline_step_state_pending" || strings.Contains(string(resp.body), "started_on") {
		t.Errorf("pending step: %s", resp.body)
	}

	var runningSteps pageJSON[stepJSON]
	e.do(http.MethodGet, pipelinesPath+"/"+ids[2]+"/steps", nil).json(t, &runningSteps)
	var one stepJSON
	e.do(http.MethodGet, pipelinesPath+"/"+ids[2]+"/steps/"+runningSteps.Values[0].UUID, nil).json(t, &one)
	if one.State.Name != "IN_PROGRESS" || one.StartedOn == "" || one.CompletedOn != "" {
		t.Errorf("running step: %+v", one)
	}
	var doneSteps pageJSON[stepJSON]
	e.do(http.MethodGet, pipelinesPath+"/"+ids[0]+"/steps", nil).json(t, &doneSteps)
	if st := doneSteps.Values[0]; st.State.Result == nil || st.State.Result.Name != ResultSuccessful || st.CompletedOn == "" {
		t.Errorf("completed step: %+v", st)
	}

	for _, missing := range []string{
		pipelinesPath + "/{00000000-0000-4000-8000-000000000000}",
		pipelinesPath + "/" + ids[0] + "/steps/{00000000-0000-4000-8000-000000000000}",
		"/2.0/repositories/demo/nope/pipelines",
	} {
		if resp := e.do(http.MethodGet, missing, nil); resp.status != http.StatusNotFound {
			t.Errorf("%s: %d, want 404", missing, resp.status)
		}
	}
}

func TestPipelineFileCarriesRunsOnLabels(t *testing.T) {
	e, ids := pipelineWorld(t)
	var waiting, running pipelineJSON
	e.do(http.MethodGet, pipelinesPath+"/"+ids[1], nil).json(t, &waiting)
	e.do(http.MethodGet, pipelinesPath+"/"+ids[2], nil).json(t, &running)

	type stepDef struct {
		Step struct {
			Name   string   `json:"name"`
			RunsOn []string `json:"runs-on"`
		} `json:"step"`
		Parallel []stepDef `json:"parallel"`
	}
	parse := func(commit string) []stepDef {
		resp := e.do(http.MethodGet, "/2.0/repositories/demo/app/src/"+commit+"/bitbucket-pipelines.yml", nil)
		if resp.status != http.StatusOK {
			t.Fatalf("src: %d %s", resp.status, resp.body)
		}
		var file struct {
			Pipelines struct {
				Default []stepDef `json:"default"`
			} `json:"pipelines"`
		}
		if err := yaml.Unmarshal(resp.body, &file); err != nil {
			t.Fatalf("parse %s: %v", resp.body, err)
		}
		return file.Pipelines.Default
	}

	parallel := parse(waiting.Target.Commit.Hash)
	if len(parallel) != 1 || len(parallel[0].Parallel) != 3 {
		t.Fatalf("three steps should form one parallel group: %+v", parallel)
	}
	for _, s := range parallel[0].Parallel {
		if !slices.Equal(s.Step.RunsOn, []string{"self.hosted", "linux", "gpu"}) {
			t.Errorf("parallel step runs-on %v", s.Step.RunsOn)
		}
	}
	single := parse(running.Target.Commit.Hash[:12])
	if len(single) != 1 || !slices.Equal(single[0].Step.RunsOn, []string{"self.hosted", "linux"}) {
		t.Fatalf("single step file: %+v", single)
	}

	if resp := e.do(http.MethodGet, "/2.0/repositories/demo/app/src/0123456789abcdef/bitbucket-pipelines.yml", nil); resp.status != http.StatusNotFound {
		t.Errorf("unknown commit: %d", resp.status)
	}
	if resp := e.do(http.MethodGet, "/2.0/repositories/demo/app/src/"+running.Target.Commit.Hash+"/README.md", nil); resp.status != http.StatusNotFound {
		t.Errorf("other file: %d", resp.status)
	}
}

func TestWorkspaceAndRepositoryLookups(t *testing.T) {
	e := newEnv(t, Options{})
	var ws workspaceJSON
	for _, key := range []string{"demo", DefaultWorkspaceUUID} {
		resp := e.do(http.MethodGet, "/2.0/workspaces/"+key, nil)
		if resp.status != http.StatusOK {
			t.Fatalf("workspace %s: %d", key, resp.status)
		}
		resp.json(t, &ws)
		if ws.UUID != DefaultWorkspaceUUID || ws.Slug != "demo" || ws.Type != "workspace" {
			t.Errorf("workspace %s: %+v", key, ws)
		}
	}
	var repo repositoryJSON
	e.do(http.MethodGet, "/2.0/repositories/demo/lib", nil).json(t, &repo)
	if repo.UUID != libRepoUUID || repo.Slug != "lib" || repo.FullName != "demo/lib" || repo.Type != "repository" {
		t.Errorf("repository: %+v", repo)
	}
	var repos pageJSON[repositoryJSON]
	e.do(http.MethodGet, "/2.0/repositories/demo/?pagelen=1&q=project.uuid%3D%22x%22", nil).json(t, &repos)
	if repos.Size != 2 || len(repos.Values) != 1 || !strings.Contains(repos.Next, "page=2") || !strings.Contains(repos.Next, "q=") {
		t.Errorf("repository list: %+v", repos)
	}
	if resp := e.do(http.MethodGet, "/2.0/workspaces/nope", nil); resp.status != http.StatusNotFound {
		t.Errorf("unknown workspace: %d", resp.status)
	}
}
