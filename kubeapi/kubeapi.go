// Package kubeapi is kube-ipvs' client of the Kubernetes API: client-go's
// REST client over a scheme that knows only what kube-ipvs reads and
// writes (core/v1, discovery.k8s.io/v1, events.k8s.io/v1).
//
// It stands in for client-go's generated clientset, whose scheme package
// registers every API group of Kubernetes at start-up: importing it costs
// a process about 9 MB of resident memory before it lists anything, and
// start-up time on a slow node. The requests are those the generated
// clients make (the same paths, query parameters, content types and rate
// limits) but one: an informer lists and then watches, where client-go's
// generated informers stream their first objects with a watch-list (see
// ListThenWatch).
package kubeapi

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/version"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
)

// Scheme holds the API types kube-ipvs decodes and encodes; Codecs
// serializes them (JSON, YAML, protobuf).
var (
	Scheme = runtime.NewScheme()
	Codecs = serializer.NewCodecFactory(Scheme)

	parameters = runtime.NewParameterCodec(Scheme)
)

func init() {
	utilruntime.Must(v1.AddToScheme(Scheme))
	utilruntime.Must(discovery.AddToScheme(Scheme))
	utilruntime.Must(eventsv1.AddToScheme(Scheme))
	// The unversioned meta types (Status, WatchEvent, list options) as
	// client-go's scheme has them.
	metav1.AddToGroupVersion(Scheme, schema.GroupVersion{Version: "v1"})
}

// Client talks to one apiserver, one REST client per API group version
// over one HTTP client (one connection pool), each with its own rate
// limiter as the generated clientset's group clients have.
type Client struct {
	core, discovery, events rest.Interface
	host                    string
}

// New returns a Client for rc.
func New(rc *rest.Config) (*Client, error) {
	httpClient, err := rest.HTTPClientFor(rc)
	if err != nil {
		return nil, err
	}
	c := &Client{host: rc.Host}
	for _, g := range []struct {
		client  *rest.Interface
		gv      schema.GroupVersion
		apiPath string
	}{
		{&c.core, v1.SchemeGroupVersion, "/api"},
		{&c.discovery, discovery.SchemeGroupVersion, "/apis"},
		{&c.events, eventsv1.SchemeGroupVersion, "/apis"},
	} {
		cfg := rest.CopyConfig(rc)
		cfg.GroupVersion = &g.gv
		cfg.APIPath = g.apiPath
		cfg.NegotiatedSerializer = Codecs.WithoutConversion()
		if cfg.UserAgent == "" {
			cfg.UserAgent = rest.DefaultKubernetesUserAgent()
		}
		group, err := rest.RESTClientForConfigAndClient(cfg, httpClient)
		if err != nil {
			return nil, fmt.Errorf("%s client: %w", g.gv, err)
		}
		*g.client = group
	}
	return c, nil
}

// Host is the apiserver's address, as configured.
func (c *Client) Host() string { return c.host }

// ServerVersion asks the apiserver its version (GET /version), as
// `kubectl version` does.
func (c *Client) ServerVersion(ctx context.Context) (*version.Info, error) {
	body, err := c.core.Get().AbsPath("/version").Do(ctx).Raw()
	if err != nil {
		return nil, err
	}
	var info version.Info
	if err := json.Unmarshal(body, &info); err != nil {
		return nil, fmt.Errorf("the apiserver's version %q: %w", body, err)
	}
	return &info, nil
}

// Services lists and watches the Services of every namespace that sel
// selects.
func (c *Client) Services(sel labels.Selector) cache.ListerWatcher {
	return listWatch(c.core, "services", func() runtime.Object { return &v1.ServiceList{} },
		func(o *metav1.ListOptions) { o.LabelSelector = sel.String() })
}

// EndpointSlices lists and watches the EndpointSlices of every namespace
// that sel selects.
func (c *Client) EndpointSlices(sel labels.Selector) cache.ListerWatcher {
	return listWatch(c.discovery, "endpointslices", func() runtime.Object { return &discovery.EndpointSliceList{} },
		func(o *metav1.ListOptions) { o.LabelSelector = sel.String() })
}

// Node lists and watches the Node called name.
func (c *Client) Node(name string) cache.ListerWatcher {
	return listWatch(c.core, "nodes", func() runtime.Object { return &v1.NodeList{} },
		func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", name).String()
		})
}

// CreateEvent creates e in its namespace.
func (c *Client) CreateEvent(ctx context.Context, e *eventsv1.Event) error {
	return c.events.Post().Namespace(e.Namespace).Resource("events").Body(e).Do(ctx).Error()
}

// listWatch lists and watches resource across namespaces, with select
// applied to every request's options, as a generated informer does.
func listWatch(rc rest.Interface, resource string, newList func() runtime.Object, selectFn func(*metav1.ListOptions)) cache.ListerWatcher {
	request := func(o metav1.ListOptions) *rest.Request {
		selectFn(&o)
		var timeout time.Duration
		if o.TimeoutSeconds != nil {
			timeout = time.Duration(*o.TimeoutSeconds) * time.Second
		}
		return rc.Get().Resource(resource).VersionedParams(&o, parameters).Timeout(timeout)
	}
	return ListThenWatch{&cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			list := newList()
			if err := request(o).Do(ctx).Into(list); err != nil {
				return nil, err
			}
			return itemsInPlace(list)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.Watch = true
			return request(o).Watch(ctx)
		},
	}}
}

// ObjectList is a list as an informer's reflector takes it: the items of
// a decoded list, each where decoding put it. For a list whose items are
// values (v1.ServiceList's []v1.Service), client-go's reflector copies
// each item into an object of its own so the cache does not keep the
// list's array; a list of runtime.Object items it stores as they are.
// The cache then keeps each list's array instead (no bigger than the
// items it holds, and one allocation for them all, with no copy), until
// every item has been replaced by a watch event or the next list.
type ObjectList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []runtime.Object `json:"items"`
}

// DeepCopyObject copies l and every item.
func (l *ObjectList) DeepCopyObject() runtime.Object {
	c := &ObjectList{TypeMeta: l.TypeMeta, Items: make([]runtime.Object, len(l.Items))}
	l.ListMeta.DeepCopyInto(&c.ListMeta)
	for i, o := range l.Items {
		c.Items[i] = o.DeepCopyObject()
	}
	return c
}

// itemsInPlace is list as an ObjectList of its own items.
func itemsInPlace(list runtime.Object) (*ObjectList, error) {
	lm, err := meta.ListAccessor(list)
	if err != nil {
		return nil, err
	}
	items, err := meta.ExtractList(list) // the items where they are
	if err != nil {
		return nil, err
	}
	return &ObjectList{
		TypeMeta: metav1.TypeMeta{Kind: "List", APIVersion: "v1"},
		ListMeta: metav1.ListMeta{
			ResourceVersion:    lm.GetResourceVersion(),
			Continue:           lm.GetContinue(),
			RemainingItemCount: lm.GetRemainingItemCount(),
		},
		Items: items,
	}, nil
}

// ListThenWatch is an informer's ListWatch that tells client-go's
// reflector it does not take watch-list semantics, so the reflector's
// first read is a LIST (from the apiserver's watch cache, resourceVersion
// 0) and its watch starts at the list's resourceVersion, as every
// client-go informer did before the WatchListClient gate became the
// default in v1.35. A watch-list (sendInitialEvents) sends each object as
// a watch event of its own, framed, wrapped and decoded twice, and the
// reflector keeps them in a store of its own until the
// initial-events-end bookmark: a node joining with 5,000 Services and
// their EndpointSlices spent about 1.6 s more CPU on that in the
// benchmark's VM (test/vm/bench) than on the lists, at the same peak
// memory. What a list costs instead is on the apiserver, which answers it
// in one response.
type ListThenWatch struct{ *cache.ListWatch }

// IsWatchListSemanticsUnSupported is true: list, then watch.
func (ListThenWatch) IsWatchListSemanticsUnSupported() bool { return true }
