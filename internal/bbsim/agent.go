package bbsim

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
)

// Environment variables the runner container reads (Atlassian's "run step"
// command and the runner image documentation).
const (
	envRunnerUUID     = "RUNNER_UUID"
	envAccountUUID    = "ACCOUNT_UUID"
	envRepositoryUUID = "REPOSITORY_UUID"
	envClientID       = "OAUTH_CLIENT_ID"
	envClientSecret   = "OAUTH_CLIENT_SECRET"
)

// kwokNodeAnnotation marks the nodes kwok plays (test/framework's
// FakeNodeAnnotation). Only pods bound to one get an emulated agent: a pod on a
// real node runs a real agent, which connects through the agent API. The node
// is known, and annotated, before the pod can run on it, so the choice never
// races with the real agent's connect.
const (
	kwokNodeAnnotation = "kwok.x-k8s.io/node"
	kwokNodeValue      = "fake"
)

// podResync re-delivers every pod periodically, which retries agents whose
// credentials could not be read yet and re-adopts pods after a Reset.
const podResync = 10 * time.Second

// agentPod is an emulated runner agent living in one pod.
type agentPod struct {
	key          string // namespace/name
	runnerUUID   string
	accountUUID  string
	repoUUID     string
	clientID     string
	clientSecret string
	credErr      string
	connectAt    time.Time
	attempted    bool
	connected    bool
	issue        string
}

// AgentView is one runner pod as the emulated agent sees it.
type AgentView struct {
	Pod       string    `json:"pod"`
	Runner    string    `json:"runner"`
	Connected bool      `json:"connected"`
	ConnectAt time.Time `json:"connect_at"`
	Issue     string    `json:"issue,omitempty"`
}

func conflictMessage(runnerUUID string) string {
	return fmt.Sprintf("Conflict. The container name \"/runner-%s\" is already in use", strings.Trim(runnerUUID, "{}"))
}

// ConnectRunner marks the runner's agent as connected, as if a runner
// container had started with the right credentials.
func (s *Server) ConnectRunner(runnerUUID string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.findRunnerLocked(runnerUUID)
	if r == nil {
		return fmt.Errorf("connect runner %s: not found", runnerUUID)
	}
	s.connectLocked(r, "")
	s.scheduleLocked()
	return nil
}

// DisconnectRunner marks the runner's agent as gone; a step it was running fails.
func (s *Server) DisconnectRunner(runnerUUID string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.findRunnerLocked(runnerUUID)
	if r == nil {
		return fmt.Errorf("disconnect runner %s: not found", runnerUUID)
	}
	for _, ap := range s.agentPods {
		if ap.runnerUUID == r.uuid && ap.connected {
			ap.connected = false
			ap.issue = "disconnected by the simulator"
		}
	}
	s.disconnectLocked(r, "agent disconnected")
	s.scheduleLocked()
	return nil
}

func (s *Server) findRunnerLocked(id string) *runner {
	if r := s.runners[braced(id)]; r != nil {
		return r
	}
	return nil
}

func (s *Server) connectLocked(r *runner, podKey string) {
	r.connected, r.everConnected = true, true
	r.agentPod = podKey
	r.agentIssue = ""
	s.touchRunnerLocked(r)
	s.log.V(1).Info("runner online", "runner", r.uuid, "pod", podKey)
}

func (s *Server) disconnectLocked(r *runner, reason string) {
	if !r.connected {
		return
	}
	r.connected, r.realAgent = false, false
	r.agentPod = ""
	s.touchRunnerLocked(r)
	if r.current != nil {
		s.failStepLocked(r.current, ResultError, fmt.Sprintf("runner %s went offline while running the step: %s", r.uuid, reason))
	}
	s.log.V(1).Info("runner offline", "runner", r.uuid, "reason", reason)
}

// connectDueAgentsLocked lets every pod whose connect delay has passed try to
// connect, earliest first, so that of two pods for one runner the first wins.
func (s *Server) connectDueAgentsLocked(now time.Time) {
	var due []*agentPod
	for _, ap := range s.agentPods {
		if !ap.attempted && !now.Before(ap.connectAt) {
			due = append(due, ap)
		}
	}
	slices.SortFunc(due, func(a, b *agentPod) int {
		return cmp.Or(a.connectAt.Compare(b.connectAt), strings.Compare(a.key, b.key))
	})
	for _, ap := range due {
		ap.attempted = true
		ap.issue = s.agentRefusalLocked(ap)
		r := s.runners[ap.runnerUUID]
		if ap.issue != "" {
			if r != nil {
				r.agentIssue = ap.issue
				s.touchRunnerLocked(r)
			}
			s.log.Info("runner agent could not connect", "pod", ap.key, "runner", ap.runnerUUID, "issue", ap.issue)
			continue
		}
		ap.connected = true
		s.connectLocked(r, ap.key)
	}
}

// agentRefusalLocked says why the agent in a pod cannot connect, or "".
func (s *Server) agentRefusalLocked(ap *agentPod) string {
	r := s.runners[ap.runnerUUID]
	switch {
	case r == nil:
		return fmt.Sprintf("runner %s does not exist", ap.runnerUUID)
	case ap.credErr != "":
		return ap.credErr
	case ap.clientID != r.clientID || !equalSecret(r.clientSecret, ap.clientSecret):
		return "invalid OAuth client credentials"
	case ap.accountUUID != "" && !sameID(r.ws.uuid, ap.accountUUID):
		return fmt.Sprintf("%s %s is not the runner's workspace", envAccountUUID, ap.accountUUID)
	case r.repo != nil && !sameID(r.repo.uuid, ap.repoUUID):
		return fmt.Sprintf("%s %q is not the runner's repository", envRepositoryUUID, ap.repoUUID)
	case r.connected && r.agentPod != ap.key:
		return conflictMessage(r.uuid)
	}
	return ""
}

// podRunningLocked records that a runner pod is running; its agent connects
// after the connect delay. A pod already known keeps its place in line.
func (s *Server) podRunningLocked(update agentPod) {
	ap := s.agentPods[update.key]
	if ap != nil && ap.runnerUUID == update.runnerUUID {
		if ap.credErr == "" || update.credErr != "" {
			return
		}
		// Credentials that were missing are readable now: try again.
		ap.clientID, ap.clientSecret, ap.credErr = update.clientID, update.clientSecret, ""
		ap.attempted, ap.issue = false, ""
		ap.connectAt = s.now().Add(s.opts.ConnectDelay)
		return
	}
	if ap != nil {
		s.podGoneLocked(update.key, "pod now runs another runner")
	}
	update.connectAt = s.now().Add(s.opts.ConnectDelay)
	s.agentPods[update.key] = &update
}

// podGoneLocked forgets a pod; if its agent held the runner, the runner goes OFFLINE.
func (s *Server) podGoneLocked(key, reason string) {
	ap := s.agentPods[key]
	if ap == nil {
		return
	}
	delete(s.agentPods, key)
	if r := s.runners[ap.runnerUUID]; r != nil && ap.connected && r.agentPod == key {
		s.disconnectLocked(r, reason)
	}
}

// needsCredentialsLocked reports whether the watcher should (re)read a pod's
// credentials, so that resyncs do not re-read Secrets for settled pods.
func (s *Server) needsCredentialsLocked(key, runnerUUID string) bool {
	ap := s.agentPods[key]
	return ap == nil || ap.runnerUUID != runnerUUID || ap.credErr != ""
}

// WatchPods emulates runner agents for the runner pods it sees on kwok nodes:
// a pod whose first container has RUNNER_UUID set connects (after
// ConnectDelay) when that container runs and its OAuth credentials match the
// runner; the runner goes OFFLINE when the pod stops running or is deleted.
// Pods on other nodes are left to their real agents. namespace "" watches all
// namespaces. It blocks until ctx is done, and fails only if the pod cache
// cannot sync.
func (s *Server) WatchPods(ctx context.Context, cs kubernetes.Interface, namespace string) error {
	factory := informers.NewSharedInformerFactoryWithOptions(cs, podResync, informers.WithNamespace(namespace))
	podInformer := factory.Core().V1().Pods().Informer()
	nodes := factory.Core().V1().Nodes()
	_ = nodes.Informer()
	w := &podWatcher{s: s, cs: cs, ctx: ctx, nodes: nodes.Lister()}
	if _, err := podInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    w.observe,
		UpdateFunc: func(_, obj any) { w.observe(obj) },
		DeleteFunc: w.forget,
	}); err != nil {
		return fmt.Errorf("watch runner pods: %w", err)
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	for typ, ok := range factory.WaitForCacheSync(ctx.Done()) {
		if !ok && ctx.Err() == nil {
			return fmt.Errorf("watch runner pods: cache for %v did not sync", typ)
		}
	}
	s.log.Info("watching runner pods", "namespace", namespace)
	<-ctx.Done()
	return nil
}

type podWatcher struct {
	s     *Server
	cs    kubernetes.Interface
	ctx   context.Context
	nodes corelisters.NodeLister
	// secrets holds the Secrets read for the pod being observed (the informer calls the
	// handlers one at a time).
	secrets map[string]*corev1.Secret
}

// onKwokNode reports whether the pod is bound to a node kwok plays. The node
// cache may not have a node that was just created: then the API server is asked.
func (w *podWatcher) onKwokNode(pod *corev1.Pod) bool {
	if pod.Spec.NodeName == "" {
		return false
	}
	node, err := w.nodes.Get(pod.Spec.NodeName)
	if err != nil {
		if node, err = w.cs.CoreV1().Nodes().Get(w.ctx, pod.Spec.NodeName, metav1.GetOptions{}); err != nil {
			return false
		}
	}
	return node.Annotations[kwokNodeAnnotation] == kwokNodeValue
}

func (w *podWatcher) observe(obj any) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	key := pod.Namespace + "/" + pod.Name
	// Each Secret is read once per pod, as a kubelet resolves a container's environment: the
	// pods of a large scale-up queue up here, one after the other.
	w.secrets = map[string]*corev1.Secret{}
	container, isRunnerPod := runnerContainer(pod)
	if isRunnerPod && !w.onKwokNode(pod) {
		return // a real agent's pod
	}
	if !isRunnerPod || !containerRunning(pod, container.Name) {
		w.s.mu.Lock()
		w.s.podGoneLocked(key, "runner pod is not running")
		w.s.mu.Unlock()
		w.s.kick()
		return
	}
	runnerUUID, err := w.envValue(pod, container, envRunnerUUID)
	if err != nil || runnerUUID == "" {
		return
	}
	runnerUUID = braced(runnerUUID)

	w.s.mu.Lock()
	needed := w.s.needsCredentialsLocked(key, runnerUUID)
	w.s.mu.Unlock()
	if !needed {
		return
	}
	// Secrets are read outside the lock: the API server may be slow.
	update := agentPod{key: key, runnerUUID: runnerUUID}
	update.accountUUID, _ = w.envValue(pod, container, envAccountUUID)
	update.repoUUID, _ = w.envValue(pod, container, envRepositoryUUID)
	var credErrs []error
	update.clientID, err = w.envValue(pod, container, envClientID)
	credErrs = append(credErrs, err)
	update.clientSecret, err = w.envValue(pod, container, envClientSecret)
	credErrs = append(credErrs, err)
	if err := errors.Join(credErrs...); err != nil {
		update.credErr = err.Error()
	}

	w.s.mu.Lock()
	w.s.podRunningLocked(update)
	w.s.mu.Unlock()
	w.s.kick()
}

func (w *podWatcher) forget(obj any) {
	key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
	if err != nil {
		return
	}
	w.s.mu.Lock()
	w.s.podGoneLocked(key, "runner pod deleted")
	w.s.mu.Unlock()
	w.s.kick()
}

// runnerContainer is the pod's first regular container when it carries
// RUNNER_UUID; sidecars (docker:dind) are init containers and never match.
func runnerContainer(pod *corev1.Pod) (*corev1.Container, bool) {
	if len(pod.Spec.Containers) == 0 {
		return nil, false
	}
	c := &pod.Spec.Containers[0]
	for _, env := range c.Env {
		if env.Name == envRunnerUUID {
			return c, true
		}
	}
	return nil, false
}

func containerRunning(pod *corev1.Pod, name string) bool {
	if pod.Status.Phase != corev1.PodRunning {
		return false
	}
	for _, st := range pod.Status.ContainerStatuses {
		if st.Name == name {
			return st.State.Running != nil || st.Ready
		}
	}
	return false
}

// envValue reads an environment variable the way the kubelet fills it in: a
// literal value, or a key of a Secret or ConfigMap. An unset variable is "".
func (w *podWatcher) envValue(pod *corev1.Pod, c *corev1.Container, name string) (string, error) {
	for _, env := range c.Env {
		if env.Name != name {
			continue
		}
		if env.ValueFrom == nil {
			return env.Value, nil
		}
		switch ref := env.ValueFrom; {
		case ref.SecretKeyRef != nil:
			secret, ok := w.secrets[ref.SecretKeyRef.Name]
			if !ok {
				var err error
				if secret, err = w.cs.CoreV1().Secrets(pod.Namespace).Get(w.ctx, ref.SecretKeyRef.Name, metav1.GetOptions{}); err != nil {
					return "", fmt.Errorf("read %s from secret %s/%s: %w", name, pod.Namespace, ref.SecretKeyRef.Name, err)
				}
				if w.secrets != nil {
					w.secrets[ref.SecretKeyRef.Name] = secret
				}
			}
			if v, ok := secret.Data[ref.SecretKeyRef.Key]; ok {
				return string(v), nil
			}
			if v, ok := secret.StringData[ref.SecretKeyRef.Key]; ok {
				return v, nil
			}
			return "", fmt.Errorf("read %s: secret %s/%s has no key %s", name, pod.Namespace, ref.SecretKeyRef.Name, ref.SecretKeyRef.Key)
		case ref.ConfigMapKeyRef != nil:
			cm, err := w.cs.CoreV1().ConfigMaps(pod.Namespace).Get(w.ctx, ref.ConfigMapKeyRef.Name, metav1.GetOptions{})
			if err != nil {
				return "", fmt.Errorf("read %s from configmap %s/%s: %w", name, pod.Namespace, ref.ConfigMapKeyRef.Name, err)
			}
			v, ok := cm.Data[ref.ConfigMapKeyRef.Key]
			if !ok {
				return "", fmt.Errorf("read %s: configmap %s/%s has no key %s", name, pod.Namespace, ref.ConfigMapKeyRef.Name, ref.ConfigMapKeyRef.Key)
			}
			return v, nil
		}
		return "", fmt.Errorf("read %s: unsupported valueFrom", name)
	}
	return "", nil
}
