package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
	"github.com/runnerpool/runnerpool-operator/internal/bbsim"
	"github.com/runnerpool/runnerpool-operator/internal/runnerpod"
	"github.com/runnerpool/runnerpool-operator/test/harness"
)

const (
	scalePools     = 20
	scalePerPool   = 10
	scaleRunners   = scalePools * scalePerPool
	scaleTeams     = 4 // workspaces, each with its own OAuth consumer and namespace
	rawConcurrency = 10
	rawSample      = 100 * time.Millisecond
)

// teamWorkspaces returns n simulated workspaces, each with one repository, and an OAuth
// consumer per workspace: Bitbucket allows 100 runners per workspace and 1,000 requests per
// hour per credential, so large fleets spread over both, as they do in real use.
func teamWorkspaces(n int) ([]bbsim.Workspace, map[string]string) {
	workspaces := make([]bbsim.Workspace, 0, n)
	consumers := map[string]string{}
	for i := 1; i <= n; i++ {
		workspaces = append(workspaces, bbsim.Workspace{
			UUID: fmt.Sprintf("{0000bead-0000-4000-8000-%012d}", i),
			Slug: fmt.Sprintf("team-%d", i),
			Repositories: []bbsim.Repository{{
				UUID: fmt.Sprintf("{0000bead-0000-4000-9000-%012d}", i),
				Slug: "app",
			}},
		})
		consumers[teamClientID(i)] = teamClientSecret(i)
	}
	return workspaces, consumers
}

func teamClientID(i int) string     { return fmt.Sprintf("bench-client-%d", i) }
func teamClientSecret(i int) string { return fmt.Sprintf("bench-secret-%d", i) }
func teamNamespace(i int) string    { return fmt.Sprintf("team-%d", i) }

// runScale: 20 pools of 10 runners created at once, timed from the first create until all 200
// runners are ONLINE; then the same 200 pods created by a plain client-go loop, for scale.
func runScale(ctx context.Context, cfg config, res *results) (safety, error) {
	const scenario = "scale"
	workspaces, consumers := teamWorkspaces(scaleTeams)
	sys, err := startSystem(ctx, cfg, systemOptions{
		scenario:          scenario,
		nodes:             nodesFor(scaleRunners),
		bbsim:             bbsim.Options{Workspaces: workspaces, OAuthConsumers: consumers},
		inProcessOperator: true,
		webhooks:          true,
	})
	if err != nil {
		return safety{}, err
	}
	defer sys.stop()
	for i := 1; i <= scaleTeams; i++ {
		if err := sys.CreateNamespaceFor(ctx, teamNamespace(i), teamClientID(i), teamClientSecret(i)); err != nil {
			return safety{}, err
		}
	}

	// The API server's first create of a custom resource sets up its admission for the type
	// (quota evaluators among it), which took up to 2 s on a loaded machine: a dry run, which
	// stores nothing and which the operator never sees, takes that before the clock starts, as
	// the plain loop's pods find it done by the operator's.
	warm := harness.Pool(teamNamespace(1), "warmup", scalePerPool, scalePerPool)
	warm.Spec.Bitbucket.Workspace = v1alpha1.BitbucketUUID(workspaces[0].UUID)
	if err := sys.Client.Create(ctx, warm, client.DryRunAll); err != nil {
		return safety{}, fmt.Errorf("dry-run create of a pool: %w", err)
	}

	running, err := watchRunningPods(ctx, sys.Clientset)
	if err != nil {
		return safety{}, err
	}
	defer running.stop()
	countBefore := sys.requests.snapshot()
	kindsBefore := sys.requests.kinds()
	callsBefore := callsNow(sys)
	start := time.Now()
	for j := range scalePools {
		if j == 1 {
			progress("%s: first pool created in %s", scenario, time.Since(start).Round(time.Millisecond))
		}
		team := j%scaleTeams + 1
		if _, err := sys.createPool(ctx, poolSpec{
			namespace: teamNamespace(team), name: fmt.Sprintf("pool%02d", j), workspace: workspaces[team-1].UUID,
			min: scalePerPool, max: scalePerPool, policy: v1alpha1.ScalingPolicyIdleBuffer, idleRunners: 1,
			pollInterval: pollIntervalSeconds * time.Second, scaleDownDelay: 5 * time.Minute,
		}); err != nil {
			return safety{}, err
		}
	}
	lastReport := time.Now()
	// Sampled as often as the plain loop's pods below, so both times carry the same rounding.
	err = waitFor(ctx, 15*time.Minute, rawSample, fmt.Sprintf("%d runners ONLINE", scaleRunners), func() (bool, string, error) {
		bb := bitbucketRunners(sys.BBSim.State(), "rp-")
		on := countOnline(bb)
		why := fmt.Sprintf("%d Bitbucket runners, %d ONLINE", len(bb), on)
		if time.Since(lastReport) > 15*time.Second {
			progress("%s: %s", scenario, why)
			lastReport = time.Now()
		}
		return on >= scaleRunners, why, nil
	})
	if err != nil {
		return safety{}, err
	}
	took := time.Since(start)
	count := sys.requests.snapshot().minus(countBefore)
	calls := callsNow(sys).minus(callsBefore)
	res.set("scale200_s", took.Seconds())
	if last, ok := running.lastOf(scaleRunners); ok {
		res.set("scale200_pods_running_s", last.Sub(start).Seconds())
		progress("%s: all %d runner pods Running after %.1f s", scenario, scaleRunners, last.Sub(start).Seconds())
		progress("%s: %s", scenario, running.timeline(start))
	}
	res.set("scale200_apiserver_requests_per_runner", float64(count.total)/scaleRunners)
	// Every write counts, Events too: each is a request the API server stores.
	res.set("scale200_apiserver_writes_per_runner", float64(count.writes+count.eventWrites)/scaleRunners)
	res.set("scale200_apiserver_event_writes_per_runner", float64(count.eventWrites)/scaleRunners)
	res.set("scale200_bitbucket_calls_per_runner", calls.sum(nil)/scaleRunners)
	progress("%s: %d runners ONLINE after %.1f s; %d apiserver requests (%d writes, %d of them Events); Bitbucket: %s",
		scenario, scaleRunners, took.Seconds(), count.total, count.writes+count.eventWrites, count.eventWrites, calls)
	progress("%s: apiserver requests per runner: %s", scenario, kindsDelta(kindsBefore, sys.requests.kinds(), scaleRunners))

	// The runners are ONLINE in Bitbucket; the operator still has to see it and say so in every
	// Runner's and pool's status. The writes up to then are the whole cost of a runner created.
	if err := waitFor(ctx, 5*time.Minute, 250*time.Millisecond, "every Runner and pool status to show the runners ONLINE", func() (bool, string, error) {
		return scaleSettled(ctx, sys)
	}); err != nil {
		return safety{}, err
	}
	settled := time.Since(start)
	count = sys.requests.snapshot().minus(countBefore)
	res.set("scale200_settled_s", settled.Seconds())
	res.set("scale200_settled_writes_per_runner", float64(count.writes+count.eventWrites)/scaleRunners)
	progress("%s: every status shows it after %.1f s; %d apiserver writes (%d of them Events); per runner: %s", scenario,
		settled.Seconds(), count.writes+count.eventWrites, count.eventWrites, kindsDelta(kindsBefore, sys.requests.kinds(), scaleRunners))

	// Steady state: every runner idle and ONLINE, every pool polling. Ideally the operator
	// writes nothing to the apiserver then.
	poll := pollIntervalSeconds * time.Second
	if err := sleep(ctx, poll); err != nil {
		return safety{}, err
	}
	idleBefore := sys.requests.snapshot()
	idleKindsBefore := sys.requests.kinds()
	idleCallsBefore := callsNow(sys)
	if err := sleep(ctx, 2*poll); err != nil {
		return safety{}, err
	}
	idle := sys.requests.snapshot().minus(idleBefore)
	res.set("scale200_idle_writes_per_runner_poll", float64(idle.writes+idle.eventWrites)/scaleRunners/2)
	progress("%s: idle, apiserver requests per runner per poll: %s; Bitbucket calls per scope per poll: %s", scenario,
		kindsDelta(idleKindsBefore, sys.requests.kinds(), 2*scaleRunners), callsNow(sys).minus(idleCallsBefore).scaled(1.0/(2*scaleTeams)))

	var pods corev1.PodList
	if err := sys.Client.List(ctx, &pods, client.HasLabels{v1alpha1.LabelRunner}, client.Limit(1)); err != nil || len(pods.Items) == 0 {
		return safety{}, fmt.Errorf("list a runner pod as the template of the plain loop: %d pods, %w", len(pods.Items), err)
	}
	template := pods.Items[0]

	s, err := finish(ctx, sys, scenario, 5*time.Minute, res)
	if err != nil {
		return s, err
	}
	raw, err := rawCreate(ctx, sys, template, scaleRunners)
	if err != nil {
		return s, err
	}
	res.set("scale200_rawcreate_s", raw.Seconds())
	res.set("scale200_online_to_running_ratio", took.Seconds()/raw.Seconds())
	if podsRunning, ok := res.values["scale200_pods_running_s"]; ok {
		res.set("scale200_pods_running_ratio", podsRunning/raw.Seconds())
	}
	progress("%s: a plain client-go loop had the same %d pods Running after %.1f s", scenario, scaleRunners, raw.Seconds())
	rawOn, err := rawOnline(ctx, sys, template, workspaces, scaleRunners)
	if err != nil {
		return s, err
	}
	res.set("scale200_rawonline_s", rawOn.Seconds())
	res.set("scale200_ratio", took.Seconds()/rawOn.Seconds())
	progress("%s: the same loop had %d runners registered beforehand ONLINE after %.1f s", scenario, scaleRunners, rawOn.Seconds())
	return s, nil
}

// scaleSettled reports every Runner Idle in its status and every pool's status counting all
// of its runners ready.
func scaleSettled(ctx context.Context, sys *system) (bool, string, error) {
	var runners v1alpha1.RunnerList
	if err := sys.Client.List(ctx, &runners); err != nil {
		return false, "", fmt.Errorf("list runners: %w", err)
	}
	idle := 0
	for _, r := range runners.Items {
		if r.Status.Phase == v1alpha1.RunnerPhaseIdle {
			idle++
		}
	}
	var pools v1alpha1.RunnerPoolList
	if err := sys.Client.List(ctx, &pools); err != nil {
		return false, "", fmt.Errorf("list pools: %w", err)
	}
	ready := 0
	for _, p := range pools.Items {
		if p.Status.Ready == scalePerPool && p.Status.Replicas == scalePerPool {
			ready++
		}
	}
	return idle == scaleRunners && ready == scalePools, fmt.Sprintf("%d Runners Idle, %d pools with all runners ready", idle, ready), nil
}

// rawCreate creates n pods shaped like the template (same containers, sidecar and resources, no
// runner credentials, so bbsim ignores them) with rawConcurrency workers, and returns how long
// until all were Running. The pods are deleted afterwards.
func rawCreate(ctx context.Context, sys *system, template corev1.Pod, n int) (time.Duration, error) {
	const ns = "raw"
	if err := sys.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		return 0, fmt.Errorf("create namespace %s: %w", ns, err)
	}
	spec := *template.Spec.DeepCopy()
	spec.NodeName = ""
	for i := range spec.Containers {
		spec.Containers[i].Env, spec.Containers[i].EnvFrom = nil, nil
	}
	for i := range spec.InitContainers {
		spec.InitContainers[i].Env, spec.InitContainers[i].EnvFrom = nil, nil
	}
	pods := sys.Clientset.CoreV1().Pods(ns)
	start := time.Now()
	if err := createPods(ctx, sys, n, func(i int) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("raw-%03d", i), Namespace: ns}, Spec: *spec.DeepCopy()}
	}); err != nil {
		return 0, err
	}
	err := waitFor(ctx, 5*time.Minute, rawSample, "the plain loop's pods to run", func() (bool, string, error) {
		list, err := pods.List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, "", fmt.Errorf("list pods: %w", err)
		}
		running := 0
		for _, p := range list.Items {
			if p.Status.Phase == corev1.PodRunning {
				running++
			}
		}
		return running == n, fmt.Sprintf("%d of %d Running", running, n), nil
	})
	took := time.Since(start)
	if err != nil {
		return 0, err
	}
	if err := pods.DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{}); err != nil {
		return took, fmt.Errorf("delete the plain loop's pods: %w", err)
	}
	return took, nil
}

// rawOnline times the plain loop to the operator's own end point: n runners are registered in
// bbsim beforehand (directly, spread over the teams' workspaces as the operator's are) with a
// Secret each holding their credentials; then the template's pod, pointed at each runner's
// UUID, workspace and Secret, is created for each by the same loop as rawCreate's, timed from
// the first create until every runner is ONLINE. The registrations and Secrets are set up
// before the clock starts, so this is the least any client could take from the first pod create
// to n runners ONLINE on this control plane and agent, and the operator's scale200_s is held
// against it. The pods are deleted afterwards; the runners stay in bbsim, which ends with the
// scenario.
func rawOnline(ctx context.Context, sys *system, template corev1.Pod, workspaces []bbsim.Workspace, n int) (time.Duration, error) {
	const ns, prefix = "raw-online", "raw-online-"
	if err := sys.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		return 0, fmt.Errorf("create namespace %s: %w", ns, err)
	}
	templateSecret := ""
	for _, c := range template.Spec.Containers {
		for _, e := range c.Env {
			if e.Name == runnerpod.EnvOAuthClientID && e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
				templateSecret = e.ValueFrom.SecretKeyRef.Name
			}
		}
	}
	if templateSecret == "" {
		return 0, fmt.Errorf("the template pod %s reads no %s from a Secret", template.Name, runnerpod.EnvOAuthClientID)
	}
	type registered struct{ uuid, workspace, secret string }
	runners := make([]registered, n)
	for i := range n {
		ws, name := workspaces[i%len(workspaces)].UUID, fmt.Sprintf("%s%03d", prefix, i)
		created, err := sys.BBSim.CreateRunner(bbsim.CreateRunnerRequest{Workspace: ws, Name: name, Labels: []string{"self.hosted", "linux"}})
		if err != nil {
			return 0, err
		}
		secret := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Data:       map[string][]byte{v1alpha1.SecretKeyClientID: []byte(created.ClientID), v1alpha1.SecretKeyClientSecret: []byte(created.ClientSecret)},
		}
		if err := sys.Client.Create(ctx, secret); err != nil {
			return 0, fmt.Errorf("create secret %s: %w", name, err)
		}
		runners[i] = registered{uuid: created.UUID, workspace: ws, secret: name}
	}
	podFor := func(i int) *corev1.Pod {
		spec := template.Spec.DeepCopy()
		spec.NodeName = ""
		point := func(env []corev1.EnvVar) {
			for j := range env {
				switch e := &env[j]; {
				case e.Name == runnerpod.EnvRunnerUUID:
					e.Value = runners[i].uuid
				case e.Name == runnerpod.EnvAccountUUID:
					e.Value = runners[i].workspace
				case e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil && e.ValueFrom.SecretKeyRef.Name == templateSecret:
					e.ValueFrom.SecretKeyRef.Name = runners[i].secret
				}
			}
		}
		for c := range spec.Containers {
			point(spec.Containers[c].Env)
		}
		for c := range spec.InitContainers {
			point(spec.InitContainers[c].Env)
		}
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: runners[i].secret, Namespace: ns}, Spec: *spec}
	}
	start := time.Now()
	if err := createPods(ctx, sys, n, podFor); err != nil {
		return 0, err
	}
	err := waitFor(ctx, 5*time.Minute, rawSample, "the plain loop's runners to connect", func() (bool, string, error) {
		on := countOnline(bitbucketRunners(sys.BBSim.State(), prefix))
		return on >= n, fmt.Sprintf("%d of %d ONLINE", on, n), nil
	})
	took := time.Since(start)
	if err != nil {
		return 0, err
	}
	if err := sys.Clientset.CoreV1().Pods(ns).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{}); err != nil {
		return took, fmt.Errorf("delete the plain loop's pods: %w", err)
	}
	return took, nil
}

// createPods creates the n pods podFor makes with rawConcurrency workers.
func createPods(ctx context.Context, sys *system, n int, podFor func(i int) *corev1.Pod) error {
	work := make(chan int)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for range rawConcurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				pod := podFor(i)
				if _, err := sys.Clientset.CoreV1().Pods(pod.Namespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
					errs <- fmt.Errorf("create pod %s: %w", pod.Name, err)
				}
			}
		}()
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
	close(errs)
	return <-errs
}
