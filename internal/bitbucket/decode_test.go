package bitbucket

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestDecodeRunner(t *testing.T) {
	ts := func(s string) time.Time {
		t.Helper()
		v, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		return v.UTC()
	}
	tests := []struct {
		name     string
		json     string
		want     Runner
		wantBusy bool
		wantStep string
	}{
		{
			name: "online idle runner from a list",
			json: `{"uuid":"{670ea89c-1111-2222-3333-444455556666}","name":"good","labels":["self.hosted","linux","abc"],
			        "state":{"status":"ONLINE","updated_on":"2021-09-29T23:55:14.857790Z","version":{"current":"1.184"}},
			        "created_on":"2021-09-29T23:28:04.683210Z","updated_on":"2021-09-29T23:55:14Z","oauth_client":{"id":"cid","token_endpoint":"https://x.auth0.com/oauth/token","audience":"api.x.com"},
			        "some_new_field":{"nested":true}}`,
			want: Runner{
				UUID: "{670ea89c-1111-2222-3333-444455556666}", Name: "good", Labels: []string{"self.hosted", "linux", "abc"},
				State:     RunnerState{Status: RunnerStatusOnline, UpdatedOn: ts("2021-09-29T23:55:14.857790Z"), Version: "1.184"},
				CreatedOn: ts("2021-09-29T23:28:04.683210Z"), UpdatedOn: ts("2021-09-29T23:55:14Z"),
				OAuthClient: &OAuthClient{ID: "cid", TokenEndpoint: "https://x.auth0.com/oauth/token", Audience: "api.x.com"},
			},
		},
		{
			name: "create response with secret and string version",
			json: `{"uuid":"{u}","name":"n","labels":[],"state":{"status":"UNREGISTERED","version":"1.252","updated_on":"2021-09-29T23:55:14+00:00"},
			        "oauth_client":{"id":"cid","secret":"s3cr3t"}}`,
			want: Runner{
				UUID: "{u}", Name: "n", Labels: []string{},
				State:       RunnerState{Status: RunnerStatusUnregistered, Version: "1.252", UpdatedOn: ts("2021-09-29T23:55:14Z")},
				OAuthClient: &OAuthClient{ID: "cid", Secret: "s3cr3t"},
			},
		},
		{
			name:     "busy with step object",
			json:     `{"uuid":"{u}","state":{"status":"ONLINE","step":{"uuid":"{step}","pipeline":{"uuid":"{p}"}}}}`,
			wantBusy: true, wantStep: "{step}",
			want: Runner{UUID: "{u}", State: RunnerState{Status: RunnerStatusOnline}},
		},
		{
			name:     "busy with step string",
			json:     `{"uuid":"{u}","state":{"status":"ONLINE","step":"busy"}}`,
			wantBusy: true, wantStep: "busy",
			want: Runner{UUID: "{u}", State: RunnerState{Status: RunnerStatusOnline}},
		},
		{
			name: "step null is idle",
			json: `{"uuid":"{u}","state":{"status":"ONLINE","step":null}}`,
			want: Runner{UUID: "{u}", State: RunnerState{Status: RunnerStatusOnline}},
		},
		{
			name: "odd shapes are tolerated",
			json: `{"uuid":"{u}","name":42,"labels":"linux","state":"weird","created_on":12345,"updated_on":"not a time","oauth_client":null}`,
			want: Runner{UUID: "{u}", Name: "42", Labels: []string{"linux"}},
		},
		{
			name: "timestamp without zone is UTC",
			json: `{"uuid":"{u}","created_on":"2024-01-02T03:04:05.123456"}`,
			want: Runner{UUID: "{u}", CreatedOn: time.Date(2024, 1, 2, 3, 4, 5, 123456000, time.UTC)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeRunner([]byte(tt.json))
			if err != nil {
				t.Fatalf("decodeRunner: %v", err)
			}
			if got.Busy() != tt.wantBusy {
				t.Errorf("Busy = %v, want %v", got.Busy(), tt.wantBusy)
			}
			if tt.wantBusy {
				if got.State.Step.UUID != tt.wantStep || len(got.State.Step.Raw) == 0 {
					t.Errorf("Step = %+v, want uuid %q and raw JSON", got.State.Step, tt.wantStep)
				}
				got.State.Step = nil
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("decodeRunner =\n%#v\nwant\n%#v", got, tt.want)
			}
		})
	}
}

func TestDecodeRunnerRejects(t *testing.T) {
	for _, in := range []string{``, `null`, `[]`, `"x"`, `{}`, `{"uuid":""}`, `{"uuid":`} {
		if _, err := decodeRunner([]byte(in)); err == nil {
			t.Errorf("decodeRunner(%q) accepted", in)
		}
	}
}

func TestSecretsStayOutOfFormatting(t *testing.T) {
	r := Runner{UUID: "{u}", OAuthClient: &OAuthClient{ID: "cid", Secret: "runner-secret-value"}}
	c := Credentials{OAuthClientID: "id", OAuthClientSecret: "consumer-secret-value"}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
		for _, v := range []any{r, &r, r.OAuthClient, *r.OAuthClient, c, &c, r.MarshalLog(), c.MarshalLog()} {
			out := fmt.Sprintf(verb, v)
			if strings.Contains(out, "secret-value") {
				t.Errorf("fmt %s of %T leaks a secret: %s", verb, v, out)
			}
		}
	}
}

func TestDecodePipelineAndStep(t *testing.T) {
	p, err := decodePipeline([]byte(`{"type":"pipeline","uuid":"{p}","build_number":17,"created_on":"2024-05-01T10:00:00.000000Z",
		"state":{"name":"IN_PROGRESS","type":"pipeline_state_in_progress","stage":{"name":"RUNNING","type":"pipeline_state_in_progress_running"}},
		"target":{"type":"pipeline_ref_target","ref_type":"branch","ref_name":"main","commit":{"type":"commit","hash":"abc123"},"selector":{"type":"branches","pattern":"main"}}}`))
	if err != nil {
		t.Fatal(err)
	}
	want := Pipeline{
		UUID: "{p}", BuildNumber: 17, CreatedOn: time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC),
		State:  PipelineState{Name: "IN_PROGRESS", Type: "pipeline_state_in_progress", Stage: &NamedState{Name: "RUNNING", Type: "pipeline_state_in_progress_running"}},
		Target: PipelineTarget{Type: "pipeline_ref_target", RefType: "branch", RefName: "main", Commit: "abc123", SelectorType: "branches", SelectorPattern: "main"},
	}
	if !reflect.DeepEqual(p, want) {
		t.Errorf("decodePipeline =\n%#v\nwant\n%#v", p, want)
	}
	if !p.Running() {
		t.Error("in-progress pipeline not Running")
	}

	steps := []struct {
		json    string
		waiting bool
	}{
		{`{"uuid":"{s}","state":{"name":"PENDING","type":"pipeline_step_state_pending","stage":{"name":"PENDING"}}}`, true},
		{`{"uuid":"{s}","state":{"name":"PENDING","stage":{"name":"PAUSED"}}}`, false},
		{`{"uuid":"{s}","state":{"name":"READY"}}`, true},
		{`{"uuid":"{s}","state":{"name":"IN_PROGRESS"}}`, true},
		{`{"uuid":"{s}","state":{"name":"IN_PROGRESS"},"started_on":"2024-05-01T10:00:00Z"}`, false},
		{`{"uuid":"{s}","state":{"name":"COMPLETED","result":{"name":"SUCCESSFUL"}},"image":{"name":"golang:1"}}`, false},
	}
	for _, tt := range steps {
		s, err := decodeStep([]byte(tt.json))
		if err != nil {
			t.Fatal(err)
		}
		if s.Waiting() != tt.waiting {
			t.Errorf("%s: Waiting = %v, want %v", tt.json, s.Waiting(), tt.waiting)
		}
	}
}

func TestNormalizeUUID(t *testing.T) {
	tests := map[string]string{
		"{0a1b2c3d-1111-2222-3333-444455556666}":     "{0a1b2c3d-1111-2222-3333-444455556666}",
		"0a1b2c3d-1111-2222-3333-444455556666":       "{0a1b2c3d-1111-2222-3333-444455556666}",
		"%7B0a1b2c3d-1111-2222-3333-444455556666%7D": "{0a1b2c3d-1111-2222-3333-444455556666}",
		" my-workspace ": "my-workspace",
		"":               "",
	}
	for in, want := range tests {
		if got := normalizeUUID(in); got != want {
			t.Errorf("normalizeUUID(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestAPIURLEncodesBraces(t *testing.T) {
	c, err := New(Config{BaseURL: "http://127.0.0.1:1/prefix/", Credentials: Credentials{AccessToken: "t"}, Budgets: NewBudgetRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	s := Scope{Workspace: "{ws}", Repository: "{repo}"}
	got := c.apiURL(nil, s.runnersPath("{r}", "state")...).String()
	want := "http://127.0.0.1:1/prefix/internal/repositories/%7Bws%7D/%7Brepo%7D/pipelines-config/runners/%7Br%7D/state"
	if got != want {
		t.Errorf("apiURL = %s\nwant     %s", got, want)
	}
}

func FuzzDecodeRunner(f *testing.F) {
	seeds := []string{
		`{"uuid":"{670ea89c}","name":"good","labels":["self.hosted","linux"],"state":{"status":"ONLINE","updated_on":"2021-09-29T23:55:14.857790Z","version":{"current":"1.184"}},"created_on":"2021-09-29T23:28:04.683210Z"}`,
		`{"uuid":"{u}","state":{"status":"ONLINE","step":"busy"}}`,
		`{"uuid":"{u}","state":{"status":"ONLINE","step":{"uuid":"{s}"}}}`,
		`{"uuid":"{u}","state":{"step":null},"oauth_client":{"id":"a","secret":"b"}}`,
		`{"uuid":1e400,"labels":[{"a":1},null,true],"state":[]}`,
		`{"uuid":"x","created_on":"2021-13-45T99:99:99Z"}`,
		`[]`, `null`, `{`,
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := decodeRunner(data)
		if err != nil {
			return
		}
		if r.UUID == "" {
			t.Fatal("accepted a runner without uuid")
		}
		_ = r.Busy()
		_ = fmt.Sprint(r)
		_, _ = decodePipeline(data)
		_, _ = decodeStep(data)
	})
}
