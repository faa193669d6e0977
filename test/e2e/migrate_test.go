package e2e

import (
	"os"
	"path/filepath"
	"testing"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/runnerpool/runnerpool-operator/internal/migrate"
)

// The pools runnerpoolctl migrate-autoscaler writes from runners-autoscaler's published format
// pass the API server's schema and validation rules as they are.
func TestPoolsMigratedFromRunnersAutoscalerAreAcceptedByTheAPIServer(t *testing.T) {
	ns := namespace(t)
	for _, file := range []string{"runners_config.yaml", "runners-autoscaler-cm.yaml"} {
		data, err := os.ReadFile(filepath.Join("..", "..", "internal", "migrate", "testdata", file))
		if err != nil {
			t.Fatal(err)
		}
		res, err := migrate.Convert(data, migrate.Options{Namespace: ns, UUIDs: map[string]string{
			"acme": "{0b3f8a1e-2c4d-4e5f-8a9b-0c1d2e3f4a5b}", "web-app": "{5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d}",
		}})
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		for _, pool := range res.Pools {
			if err := sys.Client.Create(t.Context(), pool, client.DryRunAll); err != nil {
				t.Errorf("%s: pool %s refused by the API server: %v", file, pool.Name, err)
			}
		}
	}
}
