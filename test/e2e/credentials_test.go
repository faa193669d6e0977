package e2e

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
	"github.com/runnerpool/runnerpool-operator/controllers"
	"github.com/runnerpool/runnerpool-operator/internal/bbsim"
	"github.com/runnerpool/runnerpool-operator/internal/credentials"
	"github.com/runnerpool/runnerpool-operator/test/harness"
)

func clientKey(o client.Object) client.ObjectKey { return client.ObjectKeyFromObject(o) }

// TestBadCredentialsShowAConditionAndAnEventNotACrashLoop walks a pool through a missing
// Secret, a Secret with the wrong keys and rejected credentials, then fixes it.
func TestBadCredentialsShowAConditionAndAnEventNotACrashLoop(t *testing.T) {
	ns := namespace(t)
	pool := harness.Pool(ns, "creds", 1, 2)
	pool.Spec.Bitbucket.CredentialsSecretRef.Name = "later"
	if err := sys.Client.Create(t.Context(), pool); err != nil {
		t.Fatal(err)
	}

	expectCondition := func(reason, inMessage string) {
		t.Helper()
		eventually(t, 30*time.Second, "CredentialsValid "+reason, func() (bool, string) {
			p := getPool(t, ns, pool.Name)
			c := condition(p, v1alpha1.ConditionCredentialsValid)
			ready := condition(p, v1alpha1.ConditionReady)
			if c == nil || ready == nil {
				return false, "no condition yet"
			}
			ok := c.Status == "False" && c.Reason == reason && strings.Contains(c.Message, inMessage) && ready.Status == "False"
			return ok, fmt.Sprintf("CredentialsValid %+v, Ready %+v", c, ready)
		})
		eventually(t, 10*time.Second, "a warning event "+reason, func() (bool, string) {
			ev := events(t, ns, pool.Name)
			return slices.ContainsFunc(ev, func(e string) bool { return strings.HasPrefix(e, reason+":") }), fmt.Sprint(ev)
		})
	}

	expectCondition(credentials.ReasonSecretNotFound, `Secret "later" not found`)

	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "later", Namespace: ns}, StringData: map[string]string{"token": "x"}}
	if err := sys.Client.Create(t.Context(), secret); err != nil {
		t.Fatal(err)
	}
	expectCondition(credentials.ReasonSecretInvalid, v1alpha1.SecretKeyClientID)

	const wrongSecret = "definitely-not-the-secret"
	secret.StringData = map[string]string{v1alpha1.SecretKeyClientID: bbsim.DefaultClientID, v1alpha1.SecretKeyClientSecret: wrongSecret}
	if err := sys.Client.Update(t.Context(), secret); err != nil {
		t.Fatal(err)
	}
	expectCondition(credentials.ReasonInvalidCredentials, "401")

	// No runner was registered or started while the credentials were bad.
	if n := len(bbRunners(controllers.BitbucketNamePrefix(getPool(t, ns, pool.Name)))); n != 0 {
		t.Errorf("%d Bitbucket runners created with bad credentials", n)
	}
	p := getPool(t, ns, pool.Name)
	for _, c := range p.Status.Conditions {
		if strings.Contains(c.Message, wrongSecret) {
			t.Errorf("condition %s shows the secret: %q", c.Type, c.Message)
		}
	}
	for _, e := range events(t, ns, pool.Name) {
		if strings.Contains(e, wrongSecret) {
			t.Errorf("event shows the secret: %q", e)
		}
	}

	secret.StringData = map[string]string{v1alpha1.SecretKeyClientID: bbsim.DefaultClientID, v1alpha1.SecretKeyClientSecret: bbsim.DefaultClientSecret}
	if err := sys.Client.Update(t.Context(), secret); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "the pool to recover once the Secret is fixed", func() (bool, string) {
		p := getPool(t, ns, pool.Name)
		c := condition(p, v1alpha1.ConditionCredentialsValid)
		ready := condition(p, v1alpha1.ConditionReady)
		return c != nil && c.Status == "True" && ready != nil && ready.Status == "True", fmt.Sprintf("%+v %+v", c, ready)
	})
	deleteAndWaitGone(t, pool, 60*time.Second)
}

func TestCredentialsThatCannotCreateRunnersShowPermissionDenied(t *testing.T) {
	ns := namespace(t)
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "read-only", Namespace: ns},
		StringData: map[string]string{v1alpha1.SecretKeyAccessToken: readOnlyToken}}
	if err := sys.Client.Create(t.Context(), secret); err != nil {
		t.Fatal(err)
	}
	pool := harness.Pool(ns, "readonly", 1, 2)
	pool.Spec.Bitbucket.CredentialsSecretRef.Name = secret.Name
	pool = createPool(t, pool)
	eventually(t, 60*time.Second, "CredentialsValid PermissionDenied", func() (bool, string) {
		p := getPool(t, ns, pool.Name)
		c := condition(p, v1alpha1.ConditionCredentialsValid)
		return c != nil && c.Status == "False" && c.Reason == credentials.ReasonPermissionDenied && strings.Contains(c.Message, "runner:write"), fmt.Sprintf("%+v", c)
	})
	if n := len(bbRunners(controllers.BitbucketNamePrefix(pool))); n != 0 {
		t.Errorf("%d runners registered with read-only credentials", n)
	}
	deleteAndWaitGone(t, pool, 60*time.Second)
}
