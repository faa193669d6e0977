package credentials

import (
	"testing"

	"k8s.io/apimachinery/pkg/types"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
)

func proofPool(uid, workspace string) *v1alpha1.RunnerPool {
	p := &v1alpha1.RunnerPool{}
	p.UID = types.UID(uid)
	p.Namespace, p.Name = "team", uid
	p.Spec.Bitbucket.Workspace = v1alpha1.BitbucketUUID(workspace)
	p.Spec.Bitbucket.CredentialsSecretRef.Name = "bitbucket"
	return p
}

func TestACredentialSharesAScopesListOnlyAfterListingItItself(t *testing.T) {
	const ws, otherWS = "{11111111-0000-4000-8000-000000000000}", "{22222222-0000-4000-8000-000000000000}"
	c := &Clients{DefaultAPIURL: "https://api.bitbucket.example"}
	good, wrong, elsewhere := proofPool("good", ws), proofPool("wrong", ws), proofPool("elsewhere", otherWS)

	if k := c.ListKey(good); k.Credential == "" {
		t.Fatalf("a pool whose credential was never read gets the shared key %v", k)
	}
	c.credOf = map[types.UID]string{good.UID: "hash-good", wrong.UID: "hash-wrong", elsewhere.UID: "hash-good"}

	own := c.ListKey(good)
	if own.Credential != "hash-good" {
		t.Fatalf("an unproven credential's key = %v, want its own", own)
	}
	if c.PoolProven(good) {
		t.Error("PoolProven before any list")
	}
	c.Listed(own)
	if k := c.ListKey(good); k.Credential != "" || k != own.Shared() {
		t.Errorf("after its own list the key is %v, want the shared %v", k, own.Shared())
	}
	if !c.PoolProven(good) {
		t.Error("PoolProven false after the pool's credential listed its scope")
	}
	// Another credential on the same scope, and the same credential on another workspace, have
	// proven nothing.
	if k := c.ListKey(wrong); k.Credential != "hash-wrong" || c.PoolProven(wrong) {
		t.Errorf("another credential's key = %v, proven %t; want its own, unproven", k, c.PoolProven(wrong))
	}
	if k := c.ListKey(elsewhere); k.Credential != "hash-good" || c.PoolProven(elsewhere) {
		t.Errorf("the credential on another workspace: key %v, proven %t; want its own, unproven", k, c.PoolProven(elsewhere))
	}
	// Bitbucket refused the credential: it shares nothing until it lists again.
	c.Invalidate(good)
	if k := c.ListKey(good); k.Credential != "hash-good" || c.PoolProven(good) {
		t.Errorf("after Invalidate: key %v, proven %t; want its own, unproven", k, c.PoolProven(good))
	}
}
