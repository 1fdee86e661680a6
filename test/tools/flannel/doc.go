// Package flannel holds no code: its module pins the real Flannel agent,
// github.com/flannel-io/flannel at v0.28.10 (the go.mod's tool directive),
// which test/tools/build.sh builds static into
// ${KIPVS_CACHE:-/var/cache/kube-ipvs}/bin/flanneld for the VM tests that
// run kube-ipvs beside Flannel's vxlan backend (test/vm/guest/flannel.go):
//
//	CGO_ENABLED=1 go build -tags netgo,osusergo \
//	  -ldflags '-s -w -linkmode external -extldflags "-static" -X github.com/flannel-io/flannel/pkg/version.Version=v0.28.10' \
//	  -o flanneld github.com/flannel-io/flannel
//
// It is a module of its own, not a part of test/tools, because the two
// cannot share one build list: flannel v0.28.10 is built and tested
// against k8s.io/client-go, api and apimachinery v0.34, while test/tools
// pins v0.37 for kube-apiserver and kube-proxy v1.37. One module would
// raise flannel's Kubernetes libraries to v0.37 (minimal version
// selection takes the highest), a combination flannel never shipped.
//
// flanneld is linked with cgo, statically: flannel's amd64 udp backend is
// written in C and the package does not compile with CGO_ENABLED=0, and the
// VM's initramfs has no libc for a dynamically linked program. netgo and
// osusergo keep the Go resolver and user lookups, so the static glibc
// never loads NSS modules.
package flannel
