package proxier

import (
	"context"
	"fmt"
	"time"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/client-go/tools/cache"
)

// LabelServiceProxyName names the proxy that should serve a Service; other
// proxies leave it alone.
const LabelServiceProxyName = "service.kubernetes.io/service-proxy-name"

// Selector is the server-side label selector for Services and
// EndpointSlices, as kube-proxy uses it: never headless objects, and
// either unlabelled ones (proxyName empty) or those naming proxyName.
func Selector(proxyName string) (labels.Selector, error) {
	noHeadless, err := labels.NewRequirement(v1.IsHeadlessService, selection.DoesNotExist, nil)
	if err != nil {
		return nil, err
	}
	byProxy, err := labels.NewRequirement(LabelServiceProxyName, selection.DoesNotExist, nil)
	if proxyName != "" {
		byProxy, err = labels.NewRequirement(LabelServiceProxyName, selection.Equals, []string{proxyName})
	}
	if err != nil {
		return nil, fmt.Errorf("serviceProxyName %q: %w", proxyName, err)
	}
	return labels.NewSelector().Add(*noHeadless, *byProxy), nil
}

// Watcher feeds a Proxier from client-go informers.
type Watcher struct {
	services cache.SharedIndexInformer
	slices   cache.SharedIndexInformer
	node     cache.SharedIndexInformer
	start    func(stop <-chan struct{})
	// synced reports whether the Service and EndpointSlice handlers have
	// seen every object of the first list (not only the informers' caches).
	synced []cache.InformerSynced
}

// Source is where a Watcher lists and watches its objects: the apiserver
// (kubeapi.Client), or memory in tests and with --objects-dir.
type Source interface {
	// Services lists and watches the Services of every namespace that
	// sel selects.
	Services(sel labels.Selector) cache.ListerWatcher
	// EndpointSlices lists and watches the EndpointSlices of every
	// namespace that sel selects.
	EndpointSlices(sel labels.Selector) cache.ListerWatcher
	// Node lists and watches the Node called name.
	Node(name string) cache.ListerWatcher
}

// NewWatcher sets up informers on src's Services and EndpointSlices
// (filtered by Selector(proxyName)) and on the Node named nodeName, none
// of them resynced. Every event is recorded in p and then poke is called;
// handlers never touch the kernel.
func NewWatcher(src Source, nodeName, proxyName string, p *Proxier, poke func()) (*Watcher, error) {
	sel, err := Selector(proxyName)
	if err != nil {
		return nil, err
	}
	// No index: nothing looks objects up in the caches (the handlers
	// record every change), so none is kept beside them.
	informer := func(lw cache.ListerWatcher, obj runtime.Object) cache.SharedIndexInformer {
		return cache.NewSharedIndexInformer(lw, obj, 0, cache.Indexers{})
	}
	w := &Watcher{
		services: informer(src.Services(sel), &v1.Service{}),
		slices:   informer(src.EndpointSlices(sel), &discovery.EndpointSlice{}),
		node:     informer(src.Node(nodeName), &v1.Node{}),
	}
	w.start = func(stop <-chan struct{}) {
		for _, inf := range []cache.SharedIndexInformer{w.services, w.slices, w.node} {
			go inf.Run(stop)
		}
	}
	for _, inf := range []cache.SharedIndexInformer{w.services, w.slices, w.node} {
		if err := inf.SetTransform(SlimForCache); err != nil {
			return nil, fmt.Errorf("setting the cache transform: %w", err)
		}
	}
	handlers := []struct {
		inf            cache.SharedIndexInformer
		update, delete func(any)
	}{
		{w.services, typed(p.OnService), typed(p.OnServiceDelete)},
		{w.slices, sliceEvent(p, false), sliceEvent(p, true)},
		{w.node, typed(p.OnNode), func(any) {}},
	}
	for _, h := range handlers {
		reg, err := h.inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    func(obj any) { h.update(obj); poke() },
			UpdateFunc: func(_, obj any) { h.update(obj); poke() },
			DeleteFunc: func(obj any) { h.delete(unwrapTombstone(obj)); poke() },
		})
		if err != nil {
			return nil, fmt.Errorf("adding event handler: %w", err)
		}
		if h.inf != w.node {
			w.synced = append(w.synced, reg.HasSynced)
		}
	}
	return w, nil
}

// WatchNode also gives f this node's Node object at every change, nil once
// it is deleted (the proxy's health needs it). Call it before Run.
func (w *Watcher) WatchNode(f func(*v1.Node)) error {
	_, err := w.node.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    typed(f),
		UpdateFunc: func(_, obj any) { typed(f)(obj) },
		DeleteFunc: func(any) { f(nil) },
	})
	if err != nil {
		return fmt.Errorf("adding event handler: %w", err)
	}
	return nil
}

// typed adapts a typed record method to an informer callback; objects of
// another type are ignored.
func typed[T any](f func(T)) func(any) {
	return func(obj any) {
		if t, ok := obj.(T); ok {
			f(t)
		}
	}
}

// sliceEvent records a slice event in p: an object of the cache (a
// CachedSlice) as it is, any other EndpointSlice as OnSlice would.
func sliceEvent(p *Proxier, deleted bool) func(any) {
	return func(obj any) {
		switch o := obj.(type) {
		case *CachedSlice:
			p.recordSlice(o, deleted)
		case *discovery.EndpointSlice:
			p.recordSlice(cachedOf(o), deleted)
		}
	}
}

// unwrapTombstone returns the last known object of a deletion the
// informer only learned about after a relist.
func unwrapTombstone(obj any) any {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		return t.Obj
	}
	return obj
}

// Start starts the informers; they stop when ctx is done.
func (w *Watcher) Start(ctx context.Context) { w.start(ctx.Done()) }

// WaitForSync blocks until every Service and EndpointSlice of the first
// list has reached the Proxier (the Node is not waited for: a missing Node
// must not stop service traffic), or ctx is done. It reports whether they
// did.
func (w *Watcher) WaitForSync(ctx context.Context) bool {
	return cache.WaitForCacheSync(ctx.Done(), w.synced...)
}

// Run starts the informers, waits until Services and EndpointSlices have
// been listed once, and only then runs the runner until ctx is done:
// nothing reaches the kernel from a half-filled cache.
func Run(ctx context.Context, w *Watcher, r *Runner) error {
	w.Start(ctx)
	if !w.WaitForSync(ctx) {
		return fmt.Errorf("caches did not sync: %w", context.Cause(ctx))
	}
	r.Run(ctx)
	return ctx.Err()
}

// SlimForCache is the informers' transform: before an object is stored it
// drops what kube-ipvs never reads, so the caches hold only what it does.
// Every object loses its managedFields (often the largest part of it).
//
//   - A Service keeps no label (the proxy-name filter is the apiserver's),
//     annotation, owner reference, finalizer, selector (a proxy follows
//     the slices, not the pods) or status condition (only
//     status.loadBalancer is read).
//   - An EndpointSlice is stored as a CachedSlice: no label or annotation
//     but the two values read from them (the Service it serves, the
//     last-change-trigger-time of the programming latency metric), and no
//     owner reference. Its endpoints keep no zone, hints or deprecated
//     topology (kube-ipvs does not route by topology), and of their target
//     reference only the kind, namespace and name (`kube-ipvs show` names
//     the pod).
//   - A Node keeps no annotation (CNIs write large ones) and no image
//     list (status.images, the largest part of a Node).
//
// It changes the object in place, as client-go allows since v1.27, and
// is idempotent.
func SlimForCache(obj any) (any, error) {
	switch o := obj.(type) {
	case *v1.Service:
		o.ManagedFields, o.Labels, o.Annotations = nil, nil, nil
		o.OwnerReferences, o.Finalizers = nil, nil
		o.Spec.Selector = nil
		o.Status.Conditions = nil
	case *discovery.EndpointSlice:
		c := cachedOf(o)
		o.ManagedFields = nil
		o.OwnerReferences = nil
		o.Labels, o.Annotations = nil, nil
		for i := range o.Endpoints {
			ep := &o.Endpoints[i]
			ep.Zone, ep.Hints, ep.DeprecatedTopology = nil, nil, nil
			if r := ep.TargetRef; r != nil {
				ep.TargetRef = &v1.ObjectReference{Kind: r.Kind, Namespace: r.Namespace, Name: r.Name}
			}
		}
		return c, nil
	case *v1.Node:
		o.ManagedFields = nil
		o.Annotations = nil
		o.Status.Images = nil
	}
	return obj, nil
}

// CachedSlice is an EndpointSlice as the informers' cache keeps it
// (SlimForCache): what kube-ipvs reads of its labels and annotations is
// in fields of its own, and the slice has neither. A map of one entry
// costs about 350 bytes, and a slice of the EndpointSlice controller has
// two that kube-ipvs reads (of three labels and one annotation).
type CachedSlice struct {
	*discovery.EndpointSlice
	// Service is its kubernetes.io/service-name label: the Service it
	// serves, "" when it has none.
	Service string
	// Trigger is its endpoints.kubernetes.io/last-change-trigger-time,
	// zero when it has none or one not well formed.
	Trigger time.Time
}

// cachedOf is s as a CachedSlice; s is not changed.
func cachedOf(s *discovery.EndpointSlice) *CachedSlice {
	return &CachedSlice{EndpointSlice: s, Service: s.Labels[discovery.LabelServiceName], Trigger: parseTrigger(s)}
}
