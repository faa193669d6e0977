package stepqueue_test

import (
	"maps"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/runnerpool/runnerpool-operator/internal/stepqueue"
)

const (
	ws      = "{11111111-0000-4000-8000-000000000001}"
	otherWS = "{22222222-0000-4000-8000-000000000002}"
	app     = "{aaaaaaaa-0000-4000-8000-00000000000a}"
	lib     = "{bbbbbbbb-0000-4000-8000-00000000000b}"
)

func step(uuid, repo string, runsOn ...string) stepqueue.WaitingStep {
	return stepqueue.WaitingStep{UUID: uuid, Workspace: ws, Repository: repo, RunsOn: runsOn}
}

var (
	linux       = []string{"self.hosted", "linux"}
	linuxDocker = []string{"self.hosted", "linux", "docker"}
	linuxGPU    = []string{"self.hosted", "linux", "docker", "gpu"}
	arm         = []string{"self.hosted", "linux.arm64"}
)

func TestAssign(t *testing.T) {
	tests := []struct {
		name  string
		steps []stepqueue.WaitingStep
		pools []stepqueue.Pool
		want  map[string][]string // pool ID -> step UUIDs
	}{
		{
			name:  "a step goes to the one pool that has its labels",
			steps: []stepqueue.WaitingStep{step("s1", app, "self.hosted", "linux", "docker")},
			pools: []stepqueue.Pool{
				{ID: "docker", Workspace: ws, Labels: linuxDocker},
				{ID: "arm", Workspace: ws, Labels: arm},
			},
			want: map[string][]string{"docker": {"s1"}, "arm": nil},
		},
		{
			name:  "overlapping pools count a step once, in the most specific pool",
			steps: []stepqueue.WaitingStep{step("s1", app, "self.hosted", "linux", "docker")},
			pools: []stepqueue.Pool{
				{ID: "gpu", Workspace: ws, Labels: linuxGPU},
				{ID: "docker", Workspace: ws, Labels: linuxDocker},
			},
			want: map[string][]string{"gpu": nil, "docker": {"s1"}},
		},
		{
			name: "a step needing more labels goes to the pool that has them even if it is broader",
			steps: []stepqueue.WaitingStep{
				step("plain", app, "self.hosted", "linux"),
				step("gpu", app, "self.hosted", "gpu"),
			},
			pools: []stepqueue.Pool{
				{ID: "gpu", Workspace: ws, Labels: linuxGPU},
				{ID: "plain", Workspace: ws, Labels: linux},
			},
			want: map[string][]string{"gpu": {"gpu"}, "plain": {"plain"}},
		},
		{
			name:  "with equal labels a repository pool wins over a workspace pool",
			steps: []stepqueue.WaitingStep{step("s1", app, "self.hosted", "linux")},
			pools: []stepqueue.Pool{
				{ID: "a-workspace", Workspace: ws, Labels: linux},
				{ID: "z-repo", Workspace: ws, Repository: app, Labels: linux},
			},
			want: map[string][]string{"a-workspace": nil, "z-repo": {"s1"}},
		},
		{
			name:  "specificity outranks scope: a narrower workspace pool beats a broader repository pool",
			steps: []stepqueue.WaitingStep{step("s1", app, "self.hosted", "linux")},
			pools: []stepqueue.Pool{
				{ID: "repo", Workspace: ws, Repository: app, Labels: linuxDocker},
				{ID: "workspace", Workspace: ws, Labels: linux},
			},
			want: map[string][]string{"repo": nil, "workspace": {"s1"}},
		},
		{
			name:  "identical pools: the smallest ID takes the step",
			steps: []stepqueue.WaitingStep{step("s1", app, "self.hosted", "linux")},
			pools: []stepqueue.Pool{
				{ID: "pool-b", Workspace: ws, Labels: linux},
				{ID: "pool-a", Workspace: ws, Labels: linux},
			},
			want: map[string][]string{"pool-a": {"s1"}, "pool-b": nil},
		},
		{
			name: "a repository pool serves only its repository",
			steps: []stepqueue.WaitingStep{
				step("in-app", app, "self.hosted", "linux"),
				step("in-lib", lib, "self.hosted", "linux"),
			},
			pools: []stepqueue.Pool{{ID: "app-only", Workspace: ws, Repository: app, Labels: linux}},
			want:  map[string][]string{"app-only": {"in-app"}},
		},
		{
			name: "a workspace pool serves every repository of its workspace, none of another",
			steps: []stepqueue.WaitingStep{
				step("in-app", app, "self.hosted", "linux"),
				step("in-lib", lib, "self.hosted", "linux"),
				{UUID: "elsewhere", Workspace: otherWS, Repository: app, RunsOn: linux},
			},
			pools: []stepqueue.Pool{{ID: "ws", Workspace: ws, Labels: linux}},
			want:  map[string][]string{"ws": {"in-app", "in-lib"}},
		},
		{
			name: "identifiers compare with or without braces and in any case",
			steps: []stepqueue.WaitingStep{
				{UUID: "s1", Workspace: "11111111-0000-4000-8000-000000000001", Repository: "{AAAAAAAA-0000-4000-8000-00000000000A}", RunsOn: linux},
			},
			pools: []stepqueue.Pool{{ID: "repo", Workspace: ws, Repository: app, Labels: linux}},
			want:  map[string][]string{"repo": {"s1"}},
		},
		{
			name: "no pool has the labels: nobody counts the step",
			steps: []stepqueue.WaitingStep{
				step("s1", app, "self.hosted", "windows"),
			},
			pools: []stepqueue.Pool{{ID: "linux", Workspace: ws, Labels: linuxGPU}},
			want:  map[string][]string{"linux": nil},
		},
		{
			name: "cloud steps and steps with unknown labels go to no pool",
			steps: []stepqueue.WaitingStep{
				step("cloud", app),
				{UUID: "unknown", Workspace: ws, Repository: app, Reason: "no bitbucket-pipelines.yml"},
			},
			pools: []stepqueue.Pool{{ID: "ws", Workspace: ws, Labels: linuxGPU}},
			want:  map[string][]string{"ws": nil},
		},
		{
			name:  "a duplicate pool ID counts once",
			steps: []stepqueue.WaitingStep{step("s1", app, "self.hosted", "linux")},
			pools: []stepqueue.Pool{
				{ID: "p", Workspace: ws, Labels: linux},
				{ID: "p", Workspace: ws, Labels: linux},
			},
			want: map[string][]string{"p": {"s1"}},
		},
		{
			name: "duplicate labels do not make a pool look broader",
			steps: []stepqueue.WaitingStep{
				step("s1", app, "self.hosted", "linux"),
			},
			pools: []stepqueue.Pool{
				{ID: "a", Workspace: ws, Labels: []string{"self.hosted", "linux", "docker"}},
				{ID: "b", Workspace: ws, Labels: []string{"self.hosted", "linux", "linux", "self.hosted"}},
			},
			want: map[string][]string{"a": nil, "b": {"s1"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := stepIDs(stepqueue.Assign(tt.steps, tt.pools))
			if !maps.EqualFunc(got, tt.want, slices.Equal) {
				t.Errorf("Assign = %v, want %v", got, tt.want)
			}
		})
	}
}

// Whatever order pools and steps come in, each step lands in the same pool.
func TestAssignIsDeterministicAndCountsEachStepOnce(t *testing.T) {
	labelSets := [][]string{linux, linuxDocker, linuxGPU, arm, {"self.hosted", "linux", "big"}}
	var pools []stepqueue.Pool
	for i, labels := range labelSets {
		pools = append(pools,
			stepqueue.Pool{ID: "ws-" + string(rune('a'+i)), Workspace: ws, Labels: labels},
			stepqueue.Pool{ID: "app-" + string(rune('a'+i)), Workspace: ws, Repository: app, Labels: labels})
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var steps []stepqueue.WaitingStep
	for i := range 200 {
		labels := labelSets[rng.IntN(len(labelSets))]
		repo := []string{app, lib}[rng.IntN(2)]
		steps = append(steps, step(string(rune('A'+i%26))+string(rune('0'+i/26)), repo, labels[:1+rng.IntN(len(labels))]...))
	}

	want := stepIDs(stepqueue.Assign(steps, pools))
	total := 0
	for _, ids := range want {
		total += len(ids)
	}
	if total != len(steps) {
		t.Fatalf("assigned %d steps, want every one of the %d exactly once", total, len(steps))
	}
	for range 20 {
		shuffled := slices.Clone(pools)
		rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		if got := stepIDs(stepqueue.Assign(steps, shuffled)); !maps.EqualFunc(got, want, slices.Equal) {
			t.Fatalf("pool order changed the assignment:\n got %v\nwant %v", got, want)
		}
	}
}

func stepIDs(assigned map[string][]stepqueue.WaitingStep) map[string][]string {
	out := make(map[string][]string, len(assigned))
	for id, steps := range assigned {
		var ids []string
		for _, st := range steps {
			ids = append(ids, st.UUID)
		}
		out[id] = ids
	}
	return out
}
