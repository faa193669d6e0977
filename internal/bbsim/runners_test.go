package bbsim

import (
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"
)

var bitbucketTimestamp = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$`)

func TestCreateRunnerShowsTheSecretOnlyOnce(t *testing.T) {
	e := newEnv(t, Options{})
	created := e.createRunner(wsRunnersPath(DefaultWorkspaceUUID), "runner-a", "self.hosted", "linux", "docker.builds")
	if !regexp.MustCompile(`^\{[0-9a-f-]{36}\}$`).MatchString(created.UUID) {
		t.Errorf("uuid %q is not a braced UUID", created.UUID)
	}
	if created.State.Status != StatusUnregistered || created.State.Step != nil {
		t.Errorf("new runner state = %+v", created.State)
	}
	oc := created.OAuthClient
	if oc.ID == "" || oc.Secret == "" || oc.TokenEndpoint == "" || oc.Audience == "" {
		t.Errorf("create response oauth_client incomplete: %+v", oc)
	}
	for _, ts := range []string{created.CreatedOn, created.UpdatedOn, created.State.UpdatedOn} {
		if !bitbucketTimestamp.MatchString(ts) {
			t.Errorf("timestamp %q not in Bitbucket format", ts)
		}
	}

	got := e.do(http.MethodGet, wsRunnersPath(DefaultWorkspaceUUID)+"/"+created.UUID, nil)
	listed := e.do(http.MethodGet, wsRunnersPath(DefaultWorkspaceUUID), nil)
	for name, resp := range map[string]response{"get": got, "list": listed} {
		if resp.status != http.StatusOK {
			t.Fatalf("%s: %d %s", name, resp.status, resp.body)
		}
		if strings.Contains(string(resp.body), oc.Secret) || strings.Contains(string(resp.body), `"secret"`) {
			t.Errorf("%s shows the OAuth secret: %s", name, resp.body)
		}
		if !strings.Contains(string(resp.body), oc.ID) {
			t.Errorf("%s lacks the OAuth client id", name)
		}
	}
}

func TestRunnerNamesNeedNotBeUnique(t *testing.T) {
	e := newEnv(t, Options{})
	a := e.createRunner(wsRunnersPath(DefaultWorkspaceUUID), "same")
	b := e.createRunner(wsRunnersPath(DefaultWorkspaceUUID), "same")
	if a.UUID == b.UUID {
		t.Fatal("two runners share a UUID")
	}
}

func TestRunnerLabelValidation(t *testing.T) {
	custom := func(n int) []string {
		labels := []string{"self.hosted", "linux"}
		for i := range n {
			labels = append(labels, fmt.Sprintf("custom%d", i))
		}
		return labels
	}
	cases := []struct {
		name   string
		labels []string
		ok     bool
	}{
		{"system labels only", []string{"self.hosted", "linux"}, true},
		{"arm64", []string{"self.hosted", "linux.arm64", "builds"}, true},
		{"arm", []string{"self.hosted", "linux.arm"}, true},
		{"dotted custom label", []string{"self.hosted", "linux", "pool.builds.v2"}, true},
		{"ten custom labels", custom(10), true},
		{"eleven custom labels", custom(11), false},
		{"uppercase", []string{"self.hosted", "linux", "Docker"}, false},
		{"dash", []string{"self.hosted", "linux", "my-label"}, false},
		{"underscore", []string{"self.hosted", "linux", "my_label"}, false},
		{"leading dot", []string{"self.hosted", "linux", ".x"}, false},
		{"double dot", []string{"self.hosted", "linux", "a..b"}, false},
		{"empty label", []string{"self.hosted", "linux", ""}, false},
		{"no labels", nil, false},
		{"no self.hosted", []string{"linux", "builds"}, false},
		{"no OS label", []string{"self.hosted", "builds"}, false},
		{"two OS labels", []string{"self.hosted", "linux", "linux.arm64"}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, Options{})
			resp := e.do(http.MethodPost, wsRunnersPath(DefaultWorkspaceUUID), createRunnerBody{Name: "r", Labels: tc.labels})
			if tc.ok && resp.status != http.StatusOK {
				t.Fatalf("rejected: %d %s", resp.status, resp.body)
			}
			if !tc.ok {
				if resp.status != http.StatusBadRequest {
					t.Fatalf("status %d, want 400: %s", resp.status, resp.body)
				}
				resp.errorMessage(t)
			}
		})
	}
}

func TestRunnerLimitPerScope(t *testing.T) {
	e := newEnv(t, Options{RunnerLimit: 2})
	ws := wsRunnersPath(DefaultWorkspaceUUID)
	repo := repoRunnersPath(DefaultWorkspaceUUID, DefaultRepositoryUUID)
	e.createRunner(ws, "w1")
	e.createRunner(ws, "w2")
	resp := e.do(http.MethodPost, ws, createRunnerBody{Name: "w3", Labels: []string{"self.hosted", "linux"}})
	if resp.status != http.StatusBadRequest || !strings.Contains(resp.errorMessage(t), "limit of 2") {
		t.Fatalf("third workspace runner: %d %s", resp.status, resp.body)
	}
	// Repository runners have their own limit.
	e.createRunner(repo, "r1")
	e.createRunner(repo, "r2")
	if resp := e.do(http.MethodPost, repo, createRunnerBody{Name: "r3", Labels: []string{"self.hosted", "linux"}}); resp.status != http.StatusBadRequest {
		t.Fatalf("third repository runner: %d %s", resp.status, resp.body)
	}
	// Deleting one frees a slot.
	first := e.sim.State().Runners[0]
	if resp := e.do(http.MethodDelete, ws+"/"+first.UUID, nil); resp.status != http.StatusNoContent {
		t.Fatalf("delete: %d", resp.status)
	}
	e.createRunner(ws, "w3")
}

func TestRunnerListPagination(t *testing.T) {
	const total = 150
	e := newEnv(t, Options{RunnerLimit: 200})
	path := wsRunnersPath(DefaultWorkspaceUUID)
	for i := range total {
		if _, err := e.sim.CreateRunner(CreateRunnerRequest{Name: fmt.Sprintf("r%03d", i), Labels: []string{"self.hosted", "linux"}}); err != nil {
			t.Fatal(err)
		}
	}

	var page pageJSON[runnerJSON]
	e.do(http.MethodGet, path, nil).json(t, &page)
	if page.PageLen != 10 || len(page.Values) != 10 || page.Size != total || page.Page != 1 {
		t.Fatalf("default page: pagelen %d, %d values, size %d", page.PageLen, len(page.Values), page.Size)
	}

	seen := map[string]bool{}
	next := e.http.URL + path + "?pagelen=500"
	pages := 0
	for next != "" {
		u, err := url.Parse(next)
		if err != nil || !u.IsAbs() {
			t.Fatalf("next %q is not an absolute URL", next)
		}
		var p pageJSON[runnerJSON]
		resp := e.doURL(http.MethodGet, next, nil)
		if resp.status != http.StatusOK {
			t.Fatalf("GET %s: %d", next, resp.status)
		}
		resp.json(t, &p)
		if p.PageLen != maxPageLen {
			t.Errorf("pagelen %d, want it capped at %d", p.PageLen, maxPageLen)
		}
		for _, r := range p.Values {
			seen[r.UUID] = true
		}
		next = p.Next
		pages++
	}
	if pages != 2 || len(seen) != total {
		t.Fatalf("followed %d pages and saw %d runners, want 2 and %d", pages, len(seen), total)
	}

	var beyond pageJSON[runnerJSON]
	e.do(http.MethodGet, path+"?page=9&pagelen=100", nil).json(t, &beyond)
	if len(beyond.Values) != 0 || beyond.Next != "" {
		t.Errorf("page past the end: %+v", beyond)
	}
	if resp := e.do(http.MethodGet, path+"?page=0", nil); resp.status != http.StatusBadRequest {
		t.Errorf("page=0: %d", resp.status)
	}
}

func TestRunnerPathsAcceptBracesRawEncodedOrMissing(t *testing.T) {
	e := newEnv(t, Options{})
	r := e.createRunner(wsRunnersPath(DefaultWorkspaceUUID), "r")
	bare := func(id string) string { return strings.Trim(id, "{}") }
	encoded := func(id string) string { return url.PathEscape(id) }
	cases := map[string]string{
		"raw braces": "/internal/workspaces/" + DefaultWorkspaceUUID + "/pipelines-config/runners/" + r.UUID,
		"encoded":    "/internal/workspaces/" + encoded(DefaultWorkspaceUUID) + "/pipelines-config/runners/" + encoded(r.UUID),
		"no braces":  "/internal/workspaces/" + bare(DefaultWorkspaceUUID) + "/pipelines-config/runners/" + bare(r.UUID),
	}
	for name, path := range cases {
		t.Run(name, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodGet, e.http.URL, nil)
			if err != nil {
				t.Fatal(err)
			}
			// Opaque puts the path on the wire byte for byte, braces included.
			req.URL.Opaque = path
			req.Header.Set("Authorization", "Bearer "+testToken)
			resp := e.send(req)
			if resp.status != http.StatusOK {
				t.Fatalf("GET %s: %d %s", path, resp.status, resp.body)
			}
		})
	}
}

func TestRunnerNotFoundAnswers(t *testing.T) {
	e := newEnv(t, Options{})
	wsRunner := e.createRunner(wsRunnersPath(DefaultWorkspaceUUID), "ws-runner")
	cases := map[string]string{
		"unknown runner":        wsRunnersPath(DefaultWorkspaceUUID) + "/{00000000-0000-4000-8000-000000000000}",
		"unknown workspace":     wsRunnersPath("{00000000-0000-4000-8000-000000000000}"),
		"unknown repository":    repoRunnersPath(DefaultWorkspaceUUID, "{00000000-0000-4000-8000-000000000000}"),
		"runner in other scope": repoRunnersPath(DefaultWorkspaceUUID, DefaultRepositoryUUID) + "/" + wsRunner.UUID,
		"runner in other ws":    wsRunnersPath(otherWSUUID) + "/" + wsRunner.UUID,
	}
	for name, path := range cases {
		t.Run(name, func(t *testing.T) {
			resp := e.do(http.MethodGet, path, nil)
			if resp.status != http.StatusNotFound {
				t.Fatalf("status %d, want 404", resp.status)
			}
			resp.errorMessage(t)
		})
	}
	if resp := e.do(http.MethodDelete, wsRunnersPath(DefaultWorkspaceUUID)+"/"+wsRunner.UUID, nil); resp.status != http.StatusNoContent || len(resp.body) != 0 {
		t.Fatalf("delete: %d %q", resp.status, resp.body)
	}
	if resp := e.do(http.MethodGet, wsRunnersPath(DefaultWorkspaceUUID)+"/"+wsRunner.UUID, nil); resp.status != http.StatusNotFound {
		t.Fatalf("get after delete: %d", resp.status)
	}
}

func TestRunnerStatusTransitions(t *testing.T) {
	e := newEnv(t, Options{})
	path := wsRunnersPath(DefaultWorkspaceUUID)
	r := e.createRunner(path, "r")
	get := func() runnerJSON {
		var out runnerJSON
		e.do(http.MethodGet, path+"/"+r.UUID, nil).json(t, &out)
		return out
	}
	put := func(status string) {
		e.clock.Step(time.Second)
		if resp := e.do(http.MethodPut, path+"/"+r.UUID+"/state", runnerStateBody{Status: status}); resp.status != http.StatusOK {
			t.Fatalf("PUT %s: %d %s", status, resp.status, resp.body)
		}
	}
	lastUpdate := get().State.UpdatedOn
	expect := func(step, want string) {
		t.Helper()
		got := get()
		if got.State.Status != want {
			t.Fatalf("%s: status %s, want %s", step, got.State.Status, want)
		}
		if got.State.UpdatedOn == lastUpdate {
			t.Errorf("%s: state.updated_on did not move", step)
		}
		lastUpdate = got.State.UpdatedOn
	}

	put(StatusDisabled)
	expect("disable a new runner", StatusDisabled)
	put(StatusEnabled)
	expect("enable a runner that never connected", StatusUnregistered)
	e.clock.Step(time.Second)
	e.connect(r.UUID)
	expect("agent connects", StatusOnline)
	if get().State.Version == nil {
		t.Error("a connected runner reports no agent version")
	}
	put(StatusDisabled)
	expect("disable an online runner", StatusDisabled)
	put(StatusEnabled)
	expect("enable with the agent connected", StatusOnline)
	e.clock.Step(time.Second)
	if err := e.sim.DisconnectRunner(r.UUID); err != nil {
		t.Fatal(err)
	}
	expect("agent gone", StatusOffline)
	put(StatusDisabled)
	put(StatusEnabled)
	expect("enable with the agent gone", StatusOffline)

	if resp := e.do(http.MethodPut, path+"/"+r.UUID+"/state", runnerStateBody{Status: "PAUSED"}); resp.status != http.StatusBadRequest {
		t.Errorf("unknown status: %d", resp.status)
	}
}

func TestRunnerShowsItsStepWhileRunningIt(t *testing.T) {
	e := newEnv(t, Options{})
	path := wsRunnersPath(DefaultWorkspaceUUID)
	r := e.createRunner(path, "r")
	e.connect(r.UUID)
	ids := e.enqueue(EnqueueRequest{Count: 1, Duration: time.Minute})

	var busy runnerJSON
	e.do(http.MethodGet, path+"/"+r.UUID, nil).json(t, &busy)
	st := e.step(ids[0])
	if busy.State.Step == nil || busy.State.Step.UUID != ids[0] || busy.State.Step.Pipeline.UUID != st.Pipeline || busy.State.Step.Repository.UUID != DefaultRepositoryUUID {
		t.Fatalf("busy runner state.step = %+v", busy.State.Step)
	}
	e.advance(time.Minute)
	resp := e.do(http.MethodGet, path+"/"+r.UUID, nil)
	if strings.Contains(string(resp.body), `"step"`) {
		t.Fatalf("idle runner still shows a step: %s", resp.body)
	}
}

func TestMalformedRunnerRequests(t *testing.T) {
	e := newEnv(t, Options{})
	path := wsRunnersPath(DefaultWorkspaceUUID)
	cases := map[string]any{
		"not json": "{",
		"no name":  createRunnerBody{Labels: []string{"self.hosted", "linux"}},
	}
	for name, body := range cases {
		t.Run(name, func(t *testing.T) {
			var resp response
			if raw, isRaw := body.(string); isRaw {
				req, _ := http.NewRequest(http.MethodPost, e.http.URL+path, strings.NewReader(raw))
				req.Header.Set("Authorization", "Bearer "+testToken)
				resp = e.send(req)
			} else {
				resp = e.do(http.MethodPost, path, body)
			}
			if resp.status != http.StatusBadRequest {
				t.Fatalf("status %d, want 400", resp.status)
			}
			resp.errorMessage(t)
		})
	}
}
