package realnode

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
	"github.com/runnerpool/runnerpool-operator/internal/runnerpod"
	"github.com/runnerpool/runnerpool-operator/test/images"
)

// cacheBuild is the image a step builds twice: the step image and two layers of work, data
// written and a checksum of it, then CPU time, as a build that installs and compiles.
var cacheBuild = "FROM " + images.Step.Ref + "\n" +
	"RUN dd if=/dev/urandom of=/blob bs=1M count=128 2>/dev/null && sha256sum /blob > /blob.sum\n" +
	"RUN i=0; while [ $i -lt 400000 ]; do i=$((i+1)); done; echo $i > /count\n"

// A pool with a layer cache hands its runner's docker storage to the next runner: the second
// build of the same image, in a new pod after the first runner went, uses the layers of the
// first. The claim is bound statically to a hostPath volume made here (the node has no
// provisioner); the test reports both build times.
func TestTheLayerCacheKeepsBuildLayersForTheNextRunner(t *testing.T) {
	begin := time.Now()
	ns := namespace(t)
	dumpOnFailure(t, ns)

	class := "layer-cache-" + ns
	if len(class) > 60 {
		class = strings.TrimRight(class[:60], "-")
	}
	dir, err := os.MkdirTemp("", "runnerpool-layer-cache-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: class},
		Spec: corev1.PersistentVolumeSpec{
			StorageClassName:              class,
			AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("10Gi")},
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
			PersistentVolumeSource: corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{
				Path: dir, Type: ptr(corev1.HostPathDirectoryOrCreate),
			}},
		},
	}
	if err := sys.Client.Create(t.Context(), pv); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sys.Client.Delete(context.Background(), pv) })

	pool := realPool(ns, "cache", 1, 1)
	// The volume shares the machine's disk, whose use df reports: never empty it here.
	pool.Spec.Docker.LayerCache = &v1alpha1.LayerCacheSpec{Size: resource.MustParse("10Gi"), StorageClassName: &class, PruneAbovePercent: 100}
	createPool(t, pool)

	first := waitOnline(t, pool, 1)[0]
	claim := runnerOf(t, ns, first.pod).Status.LayerCacheClaim
	cold, coldLog := buildOnDind(t, first.pod)
	if strings.Contains(coldLog, "Using cache") {
		t.Fatalf("the first build on a new claim used a cache:\n%s", coldLog)
	}

	// The runner goes (as a recycle or a scale-down removes it) and the pool replaces it.
	runner := runnerOf(t, ns, first.pod)
	if err := sys.Client.Delete(t.Context(), runner); err != nil {
		t.Fatal(err)
	}
	var second runnerPod
	eventually(t, 2*onlineTimeout, "a new runner pod ONLINE", func() (bool, string) {
		rp := waitOnline(t, pool, 1)[0]
		second = rp
		return rp.pod.Name != first.pod.Name, "still " + rp.pod.Name
	})
	if got := runnerOf(t, ns, second.pod).Status.LayerCacheClaim; got != claim {
		t.Fatalf("the new runner holds claim %q, not %q of the runner before it", got, claim)
	}
	warm, warmLog := buildOnDind(t, second.pod)
	if strings.Count(warmLog, "Using cache") < 2 {
		t.Fatalf("the second build did not reuse both layers:\n%s", warmLog)
	}
	t.Logf("build of the same image: %s on a new claim, %s on the claim the previous runner left (%s saved); test took %s",
		cold.Round(10*time.Millisecond), warm.Round(10*time.Millisecond), (cold - warm).Round(10*time.Millisecond), time.Since(begin).Round(time.Second))

	// `make bench` runs this test for its layercache figures and reads them from here.
	if path := os.Getenv(LayerCacheFiguresEnv); path != "" {
		figures, err := json.Marshal(LayerCacheFigures{ColdBuildSeconds: cold.Seconds(), WarmBuildSeconds: warm.Seconds()})
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, figures, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func runnerOf(t *testing.T, ns string, pod *corev1.Pod) *v1alpha1.Runner {
	t.Helper()
	runner := &v1alpha1.Runner{}
	if err := sys.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: pod.Labels[v1alpha1.LabelRunner]}, runner); err != nil {
		t.Fatal(err)
	}
	return runner
}

// buildOnDind builds cacheBuild with the pod's own daemon, through its socket as the node sees
// it (the pod's docker-run volume), and returns how long the build took and its output.
func buildOnDind(t *testing.T, pod *corev1.Pod) (time.Duration, string) {
	t.Helper()
	pod = getPod(t, pod)
	dindCgroup := containerCgroup(pod.UID, containerID(statusOf(t, pod, runnerpod.DockerContainerName)))
	var dockerd int
	for _, pid := range cgroupProcs(dindCgroup) {
		if strings.HasPrefix(command(pid), "dockerd") {
			dockerd = pid
		}
	}
	if dockerd == 0 {
		t.Fatalf("no dockerd in dind's cgroup %q", dindCgroup)
	}
	storage, fsType, err := mountAt(dockerd, "/var/lib/docker")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("pod %s: dockerd's /var/lib/docker is %s (%s)", pod.Name, storage, fsType)
	// Through dockerd's own root: the volume's path on the node is longer than a unix socket
	// address may be.
	socket := filepath.Join("/proc", strconv.Itoa(dockerd), "root", "var", "run", "docker.sock")

	var buildContext bytes.Buffer
	tw := tar.NewWriter(&buildContext)
	if err := tw.WriteHeader(&tar.Header{Name: "Dockerfile", Mode: 0o644, Size: int64(len(cacheBuild))}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write([]byte(cacheBuild)); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	httpc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", socket)
	}}}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	// version=1: the classic builder, whose cache is the daemon's image store on the claim.
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://docker/build?t=layer-cache-test&version=1&rm=1", &buildContext)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-tar")
	start := time.Now()
	resp, err := httpc.Do(req)
	if err != nil {
		t.Fatalf("build on %s: %v", socket, err)
	}
	defer resp.Body.Close()
	var out strings.Builder
	scanner := bufio.NewScanner(resp.Body)
	for scanner.Scan() {
		var msg struct {
			Stream string `json:"stream"`
			Error  string `json:"error"`
		}
		if json.Unmarshal(scanner.Bytes(), &msg) != nil {
			continue
		}
		if msg.Error != "" {
			t.Fatalf("build failed: %s\n%s", msg.Error, out.String())
		}
		out.WriteString(msg.Stream)
	}
	took := time.Since(start)
	if resp.StatusCode != http.StatusOK || !strings.Contains(out.String(), "Successfully built") {
		t.Fatalf("build answered %s:\n%s", resp.Status, out.String())
	}
	return took, out.String()
}

func ptr[T any](v T) *T { return &v }
