package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"time"

	"go.uber.org/zap"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	certutil "k8s.io/client-go/util/cert"

	"github.com/kube-ipvs/kube-ipvs/config"
	"github.com/kube-ipvs/kube-ipvs/kubeapi"
)

// serviceAccountDir is where kubelet mounts the pod's ServiceAccount token
// and the cluster's CA, the files client-go's in-cluster config reads.
const serviceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// client connects to the apiserver (see restConfig).
func (a *agent) client() (*kubeapi.Client, error) {
	rc, err := restConfig(a.log, a.cfg, serviceAccountDir, os.Getenv)
	if err != nil {
		return nil, fmt.Errorf("connecting to the apiserver: %w", err)
	}
	tune(rc)
	return kubeapi.New(rc)
}

// tune sets how kube-ipvs talks to the apiserver, whatever the
// credentials.
func tune(rc *rest.Config) {
	rc.UserAgent = "kube-ipvs"
	// As kube-proxy's clientConnection.contentType default: protobuf
	// lists and watches decode several times faster than JSON and
	// allocate less, which a node joining a cluster of thousands of
	// Services feels.
	rc.ContentType = runtime.ContentTypeProtobuf
	rc.AcceptContentTypes = runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON
	// Unlike kube-proxy, no gzip: the apiserver compresses lists and the
	// initial events of a watch-list over 128 KiB, and inflating them
	// costs a joining node more CPU than the bytes cost on a cluster's
	// network (kubernetes#80919 did the same for the control plane;
	// kubernetes#112296).
	rc.DisableCompression = true
}

// restConfig says how to reach the apiserver, with kube-proxy's
// --kubeconfig and --master semantics:
//
//   - kubeconfig set: that file's credentials, with its server replaced by
//     apiServer when that is set (kubeadm's kube-proxy kubeconfig already
//     names the control-plane endpoint);
//   - apiServer alone: the pod's ServiceAccount token and CA in saDir, read
//     as client-go's in-cluster config does, but dialling apiServer;
//   - neither: the in-cluster config, which dials the kubernetes Service's
//     ClusterIP ($KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT). That
//     works only while another proxy serves that ClusterIP, so it is
//     logged as a warning.
func restConfig(log *zap.Logger, cfg *config.Configuration, saDir string, getenv func(string) string) (*rest.Config, error) {
	if cfg.Kubeconfig != "" {
		return kubeconfigFile(cfg.Kubeconfig, cfg.APIServer)
	}
	if cfg.APIServer != "" {
		return serviceAccount(log, saDir, cfg.APIServer)
	}
	host, port := getenv("KUBERNETES_SERVICE_HOST"), getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		return nil, errors.New("not in a pod ($KUBERNETES_SERVICE_HOST or $KUBERNETES_SERVICE_PORT is empty): " +
			"set apiServer (--api-server) or kubeconfig (--kubeconfig)")
	}
	server := "https://" + net.JoinHostPort(host, port)
	log.Warn("kubeconfig and apiServer are empty: dialling the apiserver at the kubernetes Service's ClusterIP, "+
		"which works only while another proxy serves it; where kube-ipvs is the only proxy, set apiServer "+
		"(https://<control-plane-endpoint>:6443) or kubeconfig", zap.String("server", server))
	return serviceAccount(log, saDir, server)
}

// kubeconfigFile loads the kubeconfig at path, like `kube-proxy
// --kubeconfig=path --master=server`; an empty server keeps the file's.
func kubeconfigFile(path, server string) (*rest.Config, error) {
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("kubeconfig %q does not exist: deploy/ points kubeconfig at the kube-proxy kubeconfig "+
			"that kubeadm puts in ConfigMap kube-system/kube-proxy; on a cluster not made by kubeadm, "+
			"remove kubeconfig and set apiServer (--api-server) to the apiserver's address, like https://192.0.2.10:6443", path)
	} else if err != nil {
		return nil, fmt.Errorf("kubeconfig %q: %w", path, err)
	}
	rc, err := clientcmd.BuildConfigFromFlags(server, path)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %q: %w", path, err)
	}
	return rc, nil
}

// serviceAccount authenticates as the pod's ServiceAccount from the files
// in dir and dials server, as rest.InClusterConfig does for the kubernetes
// Service: the token is re-read from its file as kubelet rotates it, and a
// CA that cannot be read leaves the system's roots, with a warning.
func serviceAccount(log *zap.Logger, dir, server string) (*rest.Config, error) {
	tokenFile, caFile := filepath.Join(dir, "token"), filepath.Join(dir, "ca.crt")
	token, err := os.ReadFile(tokenFile)
	if err != nil {
		return nil, fmt.Errorf("reading the ServiceAccount token: %w", err)
	}
	rc := &rest.Config{Host: server, BearerToken: string(token), BearerTokenFile: tokenFile}
	if _, err := certutil.NewPool(caFile); err != nil {
		log.Warn("no usable ServiceAccount CA: verifying the apiserver against the system's roots",
			zap.String("file", caFile), zap.Error(err))
	} else {
		rc.TLSClientConfig.CAFile = caFile
	}
	return rc, nil
}

// waitForAPIServer asks the apiserver its version until it answers or ctx
// is done, logging each distinct failure once with the server it tried, so
// an unreachable apiserver at start-up is one clear line, not the
// informers' retries. Nothing in the kernel changes meanwhile.
func (a *agent) waitForAPIServer(ctx context.Context, client *kubeapi.Client) {
	host := client.Host()
	last := ""
	for {
		_, err := client.ServerVersion(ctx)
		if err == nil {
			if last != "" {
				a.log.Info("the apiserver answers", zap.String("server", host))
			}
			return
		}
		if err.Error() != last {
			a.log.Error("cannot reach the apiserver; waiting for it, the kernel is left as it is", zap.String("server", host), zap.Error(err))
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(5 * time.Second):
		}
	}
}
