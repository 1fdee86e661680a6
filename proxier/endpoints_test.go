package proxier

import (
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	"k8s.io/utils/ptr"
)

func TestSameEndpointInTwoSlices(t *testing.T) {
	// A pod IP reused while the old pod terminates: the new, ready pod
	// wins whichever slice holds it, whatever order the slices come in.
	oldPod := ep("10.244.1.5", terminating)
	newPod := ep("10.244.1.5")
	other := ep("10.244.1.6")
	for _, tc := range []struct {
		name   string
		slices []*discovery.EndpointSlice
		want   string
		local  bool // whether the winning copy runs on this node
	}{
		{
			name: "terminating first by slice name",
			slices: []*discovery.EndpointSlice{
				slice(ns, "web-a", "web", withEndpoints(oldPod)),
				slice(ns, "web-b", "web", withEndpoints(newPod, other)),
			},
			want: "-a -t 10.96.0.10:80 -r 10.244.1.5:8080 -m -w 1\n",
		},
		{
			name: "terminating second by slice name",
			slices: []*discovery.EndpointSlice{
				slice(ns, "web-b", "web", withEndpoints(oldPod)),
				slice(ns, "web-a", "web", withEndpoints(newPod, other)),
			},
			want: "-a -t 10.96.0.10:80 -r 10.244.1.5:8080 -m -w 1\n",
		},
		{
			name: "both ready: the first slice by name wins, the endpoint is there once",
			slices: []*discovery.EndpointSlice{
				slice(ns, "web-b", "web", withEndpoints(ep("10.244.1.5", onNode(testNode)))),
				slice(ns, "web-a", "web", withEndpoints(newPod, other)),
			},
			want: "-a -t 10.96.0.10:80 -r 10.244.1.5:8080 -m -w 1\n",
		},
		{
			name: "both ready, the local copy in the first slice by name",
			slices: []*discovery.EndpointSlice{
				slice(ns, "web-a", "web", withEndpoints(ep("10.244.1.5", onNode(testNode)))),
				slice(ns, "web-b", "web", withEndpoints(newPod, other)),
			},
			want:  "-a -t 10.96.0.10:80 -r 10.244.1.5:8080 -m -w 1\n",
			local: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, order := range [][]*discovery.EndpointSlice{tc.slices, {tc.slices[1], tc.slices[0]}} {
				f, skips := BuildService(service(ns, "web"), order, v4Build)
				got := fragmentDump(f)
				if !strings.Contains(got, tc.want) || strings.Count(got, "10.244.1.5:8080") != 1 {
					t.Errorf("dump:\n%s\nwant the line %q once", got, tc.want)
				}
				for _, s := range skips {
					if !s.Reason.Normal() {
						t.Errorf("a duplicate across slices was reported as bad input: %v", s)
					}
				}
				if strings.Contains(got, "KIPVS-LOOP-BACK") != tc.local {
					t.Errorf("the wrong copy won:\n%s", got)
				}
			}
		})
	}
}

func TestDualStackAndDuplicatesAreNotBadInput(t *testing.T) {
	n := newFakeNode()
	p := newTestProxier(t, n, testOptions())
	log, logs := observed()
	p.log = log
	p.OnService(service(ns, "web", withClusterIP("10.96.0.10", "fd00::10"), func(s *v1.Service) {
		s.Spec.IPFamilies = []v1.IPFamily{v1.IPv4Protocol, v1.IPv6Protocol}
		s.Spec.IPFamilyPolicy = ptr.To(v1.IPFamilyPolicyRequireDualStack)
	}))
	p.OnSlice(slice(ns, "web-v4a", "web", withEndpoints(ep("10.244.1.1"))))
	p.OnSlice(slice(ns, "web-v4b", "web", withEndpoints(ep("10.244.1.1"))))
	p.OnSlice(slice(ns, "web-v6", "web", withAddressType(discovery.AddressTypeIPv6), withEndpoints(ep("fd00:244::1"))))
	mustSync(t, p, false)
	if got := p.Skipped(); len(got) != 0 {
		t.Errorf("counted as bad input: %v", got)
	}
	for _, e := range logs.All() {
		if e.Level > -1 && (e.Message == "not programmed" || e.Message == "skipping bad input") { // above debug
			t.Errorf("logged at %s: %s %v", e.Level, e.Message, e.ContextMap())
		}
	}
	if logs.FilterMessage("not programmed").Len() == 0 {
		t.Error("not logged at debug either")
	}
}
