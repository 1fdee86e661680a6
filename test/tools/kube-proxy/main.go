// Command kube-proxy is the upstream Kubernetes network proxy, built from
// k8s.io/kubernetes at the version pinned in test/tools/go.mod, for the VM
// tests that run it in IPVS mode next to (and before) kube-ipvs. It takes
// exactly the upstream flags. build.sh links it statically (CGO_ENABLED=0):
// the test VM's initramfs has no libc for a Go program.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // --logging-format=json
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go metrics
	_ "k8s.io/component-base/metrics/prometheus/version"  // build-info metric
	"k8s.io/kubernetes/cmd/kube-proxy/app"
)

func main() {
	os.Exit(cli.Run(app.NewProxyCommand()))
}
