# kube-ipvs node agent image.
#
#   docker build -t ghcr.io/kube-ipvs/kube-ipvs:latest .
#
# The binary is static (CGO_ENABLED=0). The runtime image carries the tools
# the agent runs or an operator needs on the node: Debian's iptables package,
# which ships both backends (xtables-legacy-multi and xtables-nft-multi, under
# the names iptables-legacy, iptables-legacy-save, iptables-legacy-restore,
# iptables-nft, … and their ip6tables twins; the agent runs the ones of the
# backend its iptablesBackend picks, "auto" detecting the node's), ipset (for
# inspection: the agent speaks netlink to ipsets) and kmod's modprobe (the
# init container loads ip_vs and the scheduler modules with it). deploy/
# runs this image.

FROM golang:1.26 AS build
WORKDIR /src
# Modules first, so that a source change does not download them again.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG TARGETOS=linux
ARG TARGETARCH
# What `kube-ipvs version` prints: docker build --build-arg VERSION=$(git
# describe --tags --always --dirty) --build-arg COMMIT=$(git rev-parse HEAD).
ARG VERSION=devel
ARG COMMIT=
RUN CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags="-s -w -X main.version=$VERSION -X main.commit=$COMMIT" -o /out/kube-ipvs ./cmd/kube-ipvs

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends iptables ipset kmod \
    && rm -rf /var/lib/apt/lists/* \
    && for b in legacy nft; do for c in iptables ip6tables; do for s in "" -save -restore; do \
         "$c-$b$s" --version >/dev/null || exit 1; done; done; done
COPY --from=build /out/kube-ipvs /usr/local/bin/kube-ipvs
ENTRYPOINT ["/usr/local/bin/kube-ipvs"]
