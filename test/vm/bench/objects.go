//go:build vmtest

package main

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kube-ipvs/kube-ipvs/test/vm/bench/measure"
)

// benchLabel marks the benchmark's objects, so a reset finds them.
const benchLabel = "bench.kube-ipvs.io/object"

// burstConfigMap is where bench-create's answer goes (guestbench.BurstConfigMap).
const burstConfigMap = "kipvs-bench-burst"

// objects creates and deletes the benchmark's API objects from the host,
// with many requests in flight and no client-side rate limit, so that
// the apiserver, not the client, sets the pace.
type objects struct {
	c       kubernetes.Interface
	layout  measure.Layout
	workers int
	logf    func(string, ...any)
}

func newObjects(admin *rest.Config, l measure.Layout, logf func(string, ...any)) (*objects, error) {
	cfg := rest.CopyConfig(admin)
	cfg.QPS, cfg.Burst = -1, 0 // no client-side rate limiter
	cfg.UserAgent = "kube-ipvs-bench"
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &objects{c: c, layout: l, workers: 32, logf: logf}, nil
}

// parallel runs f(0..n-1) on o.workers goroutines and returns the first error.
func (o *objects) parallel(ctx context.Context, n int, f func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var next atomic.Int64
	var once sync.Once
	var first error
	var wg sync.WaitGroup
	for w := 0; w < o.workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := f(ctx, i); err != nil {
					once.Do(func() { first = err; cancel() })
					return
				}
			}
		}()
	}
	wg.Wait()
	return first
}

// createAll creates every Service and its EndpointSlice and returns how
// long it took until the last create returned.
func (o *objects) createAll(ctx context.Context) (time.Duration, error) {
	began := time.Now()
	err := o.parallel(ctx, o.layout.Services, func(ctx context.Context, i int) error {
		if _, err := o.c.CoreV1().Services(measure.Namespace).Create(ctx, o.service(i), metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("creating Service %s: %w", measure.Name(i), err)
		}
		if _, err := o.c.DiscoveryV1().EndpointSlices(measure.Namespace).Create(ctx, o.slice(i), metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("creating EndpointSlice %s: %w", measure.Name(i), err)
		}
		return nil
	})
	return time.Since(began), err
}

// reset deletes every benchmark object and bench-create's ConfigMap.
func (o *objects) reset(ctx context.Context) error {
	began := time.Now()
	sel := metav1.ListOptions{LabelSelector: benchLabel}
	svcs, err := o.c.CoreV1().Services(measure.Namespace).List(ctx, sel)
	if err != nil {
		return fmt.Errorf("listing the benchmark's Services: %w", err)
	}
	if err := o.c.DiscoveryV1().EndpointSlices(measure.Namespace).DeleteCollection(ctx, metav1.DeleteOptions{}, sel); err != nil {
		return fmt.Errorf("deleting the benchmark's EndpointSlices: %w", err)
	}
	err = o.parallel(ctx, len(svcs.Items), func(ctx context.Context, i int) error {
		err := o.c.CoreV1().Services(measure.Namespace).Delete(ctx, svcs.Items[i].Name, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("deleting Service %s: %w", svcs.Items[i].Name, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	err = o.c.CoreV1().ConfigMaps(measure.Namespace).Delete(ctx, burstConfigMap, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting ConfigMap %s: %w", burstConfigMap, err)
	}
	if n := len(svcs.Items); n > 0 {
		o.logf("deleted %d Services and their EndpointSlices in %v", n, time.Since(began).Round(time.Millisecond))
	}
	return nil
}

// burst is the host command bench-create: it creates every object and
// then writes, in ConfigMap burstConfigMap, how long after it was called
// its last create returned (or what failed), which the guest polls.
func (o *objects) burst(ctx context.Context) error {
	took, err := o.createAll(ctx)
	data := map[string]string{"lastCreateAfterNanos": strconv.FormatInt(took.Nanoseconds(), 10)}
	if err != nil {
		data = map[string]string{"error": err.Error()}
	} else {
		o.logf("burst: created %d Services and %d EndpointSlices in %v (%.0f objects/s)", o.layout.Services, o.layout.Services,
			took.Round(time.Millisecond), float64(2*o.layout.Services)/took.Seconds())
	}
	cm := &v1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: burstConfigMap, Namespace: measure.Namespace}, Data: data}
	if _, cerr := o.c.CoreV1().ConfigMaps(measure.Namespace).Create(ctx, cm, metav1.CreateOptions{}); cerr != nil {
		return fmt.Errorf("writing ConfigMap %s: %w", burstConfigMap, cerr)
	}
	return err
}

// service is Service i of the layout: a ClusterIP Service with no
// selector (its slice is written by hand, as here, or by a controller).
func (o *objects) service(i int) *v1.Service {
	vip := measure.VIP(i).String()
	return &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: measure.Name(i), Namespace: measure.Namespace, Labels: map[string]string{benchLabel: "true"}},
		Spec: v1.ServiceSpec{
			Type: v1.ServiceTypeClusterIP, ClusterIP: vip, ClusterIPs: []string{vip},
			Ports: []v1.ServicePort{{Protocol: v1.ProtocolTCP, Port: measure.ServicePort, TargetPort: intstr.FromInt32(measure.TargetPort)}},
		},
	}
}

// slice is Service i's EndpointSlice: its M endpoints, ready.
func (o *objects) slice(i int) *discovery.EndpointSlice {
	s := &discovery.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: measure.Name(i), Namespace: measure.Namespace, Labels: map[string]string{
			benchLabel:                 "true",
			discovery.LabelServiceName: measure.Name(i),
			discovery.LabelManagedBy:   "endpointslice-controller.k8s.io",
		}},
		AddressType: discovery.AddressTypeIPv4,
		Ports:       []discovery.EndpointPort{{Name: ptr(""), Protocol: ptr(v1.ProtocolTCP), Port: ptr(int32(measure.TargetPort))}},
	}
	for j := 0; j < o.layout.Endpoints; j++ {
		s.Endpoints = append(s.Endpoints, discovery.Endpoint{
			Addresses:  []string{o.layout.Endpoint(i, j).String()},
			Conditions: discovery.EndpointConditions{Ready: ptr(true), Serving: ptr(true), Terminating: ptr(false)},
		})
	}
	return s
}

func ptr[T any](v T) *T { return &v }
