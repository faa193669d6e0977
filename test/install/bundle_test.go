package install_test

import (
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/yaml"
)

func TestBundleIsUpToDate(t *testing.T) {
	kustomize := tool(t, "kustomize")
	built := mustRun(t, commandEnv(t, ""), kustomize, "build", "config/default")
	if built != string(readRepoFile(t, installYAML)) {
		t.Errorf("%s is stale: run make build-installer and commit it\n%s", installYAML,
			firstDifference(string(readRepoFile(t, installYAML)), built))
	}
}

// Both install paths must run the same release of the manager by default.
func TestBundleImageIsTheChartAppVersion(t *testing.T) {
	var chart struct {
		AppVersion string `json:"appVersion"`
	}
	if err := yaml.Unmarshal(readRepoFile(t, chartDir+"/Chart.yaml"), &chart); err != nil {
		t.Fatal(err)
	}
	var images []string
	for _, doc := range splitDocuments(t, readRepoFile(t, installYAML)) {
		if !strings.Contains(string(doc), "kind: Deployment") {
			continue
		}
		var deployment appsv1.Deployment
		if err := yaml.Unmarshal(doc, &deployment); err != nil {
			t.Fatal(err)
		}
		for _, c := range deployment.Spec.Template.Spec.Containers {
			images = append(images, c.Image)
		}
	}
	want := "ghcr.io/runnerpool/runnerpool-operator:" + chart.AppVersion
	if len(images) != 1 || images[0] != want {
		t.Errorf("%s runs %v, want [%s] (the chart's appVersion; set newTag in config/manager/kustomization.yaml)", installYAML, images, want)
	}
}
