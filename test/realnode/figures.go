package realnode

// LayerCacheFiguresEnv names the file where the layer cache test writes its build times as
// LayerCacheFigures, for the benchmark, which runs that test on the real node.
const LayerCacheFiguresEnv = "REALNODE_LAYER_CACHE_FIGURES"

// LayerCacheFigures are the two build times of the same image: in a new runner's pod on a new
// claim, then in the next runner's pod on the claim the first one left.
type LayerCacheFigures struct {
	ColdBuildSeconds float64 `json:"coldBuildSeconds"`
	WarmBuildSeconds float64 `json:"warmBuildSeconds"`
}
