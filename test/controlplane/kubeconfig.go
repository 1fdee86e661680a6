package controlplane

import (
	"context"
	"fmt"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// TokenExpiration is the lifetime ServiceAccountToken asks for.
const TokenExpiration = 2 * time.Hour

// ConfigFor returns a client configuration for this apiserver that
// authenticates with the bearer token and trusts CABundle. Its rate limits
// are raised for tests (QPS 100, burst 200).
func (cp *ControlPlane) ConfigFor(token string) *rest.Config {
	return &rest.Config{
		Host:            cp.url,
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAData: cp.CABundle()},
		QPS:             100,
		Burst:           200,
	}
}

// KubeconfigFor renders a kubeconfig file that reaches serverURL with the
// bearer token and trusts CABundle, for an agent started as a separate
// process. An empty serverURL means URL(). For an agent in a VM, pass the
// address it dials (e.g. a qemu guestfwd address) and list that address in
// Options.ExtraSANs so TLS verification succeeds.
func (cp *ControlPlane) KubeconfigFor(token, serverURL string) ([]byte, error) {
	if serverURL == "" {
		serverURL = cp.url
	}
	const name = "kube-ipvs-test"
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[name] = &clientcmdapi.Cluster{Server: serverURL, CertificateAuthorityData: cp.CABundle()}
	cfg.AuthInfos[name] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts[name] = &clientcmdapi.Context{Cluster: name, AuthInfo: name}
	cfg.CurrentContext = name
	b, err := clientcmd.Write(*cfg)
	if err != nil {
		return nil, fmt.Errorf("encoding kubeconfig: %w", err)
	}
	return b, nil
}

// ServiceAccountToken returns a bound token for an existing ServiceAccount
// through the TokenRequest API, like `kubectl create token NAME -n NS`. It
// is valid for TokenExpiration. No token controller runs here, so this is
// the way to get one.
func (cp *ControlPlane) ServiceAccountToken(ctx context.Context, namespace, name string) (string, error) {
	secs := int64(TokenExpiration / time.Second)
	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &secs}}
	tr, err := cp.client.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name, req, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("token for service account %s/%s: %w", namespace, name, err)
	}
	return tr.Status.Token, nil
}
