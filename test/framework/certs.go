package framework

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// The file names envtest gives the API server's serving certificate and service account
// signing key in its certificate directory; when they exist, envtest uses them as they are.
const (
	apiServerCertFile = "apiserver.crt"
	apiServerKeyFile  = "apiserver.key"
	saSignerCertFile  = "sa-signer.crt"
	saSignerKeyFile   = "sa-signer.key"
	// rootCAFile is this package's own: the CA of the serving certificate, which the
	// controller manager publishes to every namespace as kube-root-ca.crt.
	rootCAFile = "ca.crt"
)

// kubernetesServiceIP is the ClusterIP of the default/kubernetes Service: the first address
// of envtest's service range, 10.0.0.0/24. Pods find the API server there.
var kubernetesServiceIP = net.IPv4(10, 0, 0, 1)

// writeAPIServerCerts writes, into the API server's certificate directory, a CA, a serving
// certificate signed by it for every name pods and local clients use (loopback, and the
// kubernetes Service's ClusterIP that real pods dial), and the service account signing key.
// envtest's own certificate names loopback only, so a pod's client would refuse it. It
// returns the CA certificate in PEM.
func writeAPIServerCerts(dir string) ([]byte, error) {
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	caTemplate := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "runnerpool-test-ca"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTemplate, caTemplate, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, fmt.Errorf("parse CA certificate: %w", err)
	}

	servingKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate serving key: %w", err)
	}
	servingTemplate := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "kube-apiserver"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), kubernetesServiceIP},
	}
	servingDER, err := x509.CreateCertificate(rand.Reader, servingTemplate, ca, &servingKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("create serving certificate: %w", err)
	}
	servingKeyDER, err := x509.MarshalPKCS8PrivateKey(servingKey)
	if err != nil {
		return nil, fmt.Errorf("encode serving key: %w", err)
	}

	// The API server verifies service account tokens with the public key of a certificate
	// and signs them with an RSA key, as envtest sets it up.
	saKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("generate service account key: %w", err)
	}
	saTemplate := &x509.Certificate{
		SerialNumber:          big.NewInt(3),
		Subject:               pkix.Name{CommonName: "runnerpool-test-sa-signer"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	saDER, err := x509.CreateCertificate(rand.Reader, saTemplate, saTemplate, &saKey.PublicKey, saKey)
	if err != nil {
		return nil, fmt.Errorf("create service account signer: %w", err)
	}

	caPEM := pemBlock("CERTIFICATE", caDER)
	files := map[string][]byte{
		rootCAFile:        caPEM,
		apiServerCertFile: pemBlock("CERTIFICATE", servingDER),
		apiServerKeyFile:  pemBlock("PRIVATE KEY", servingKeyDER),
		saSignerCertFile:  pemBlock("CERTIFICATE", saDER),
		saSignerKeyFile:   pemBlock("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(saKey)),
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			return nil, fmt.Errorf("write %s: %w", name, err)
		}
	}
	return caPEM, nil
}

func pemBlock(kind string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der})
}
