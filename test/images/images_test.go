package images

import (
	"os"
	"regexp"
	"testing"
)

// The manager image is the chart's default image: the chart's appVersion tag.
func TestManagerIsTheChartsDefaultImage(t *testing.T) {
	chart, err := os.ReadFile("../../charts/runnerpool-operator/Chart.yaml")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^appVersion:\s*"?([^"\s]+)"?`).FindSubmatch(chart)
	if m == nil {
		t.Fatal("Chart.yaml has no appVersion")
	}
	if want := ManagerRepository + ":" + string(m[1]); Manager.Ref != want {
		t.Fatalf("Manager.Ref = %s, the chart's default image is %s", Manager.Ref, want)
	}
	values, err := os.ReadFile("../../charts/runnerpool-operator/values.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^\s+repository:\s*` + regexp.QuoteMeta(ManagerRepository) + `\s*$`).Match(values) {
		t.Fatalf("values.yaml's image.repository is not %s", ManagerRepository)
	}
}

func TestArchivesAreNamedAfterTheirImages(t *testing.T) {
	seen := map[string]bool{}
	for _, img := range All {
		if seen[img.Name] || seen[img.Ref] {
			t.Fatalf("%s is not unique", img.Name)
		}
		seen[img.Name], seen[img.Ref] = true, true
		if got, want := img.Archive("/repo/bin"), "/repo/bin/images/"+img.Name+".tar"; got != want {
			t.Fatalf("%s: archive %s, want %s", img.Name, got, want)
		}
	}
}

func TestCheckSaysToRunMakeImages(t *testing.T) {
	err := Pause.Check(t.TempDir())
	if err == nil || !regexp.MustCompile("run `make images`").MatchString(err.Error()) {
		t.Fatalf("Check = %v", err)
	}
}
