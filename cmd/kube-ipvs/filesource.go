package main

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"

	"github.com/kube-ipvs/kube-ipvs/kubeapi"
)

// fileSource serves Services, EndpointSlices and Nodes read from YAML
// files to the agent's informers (it is a proxier.Source), so the agent
// runs its real informer path without an apiserver. Files are re-read
// every period; objects that appear, change or disappear become ADDED,
// MODIFIED and DELETED watch events. Like the apiserver it numbers its
// changes with resource versions, so a watch from a list's version misses
// nothing, and it selects by label (Services, EndpointSlices) and by name
// (the agent's own Node, when the directory holds every node's).
type fileSource struct {
	log *zap.Logger
	dir string

	mu       sync.Mutex
	rv       uint64                       // the version of the last change
	read     map[objectKey]runtime.Object // as decoded from the files
	served   map[objectKey]runtime.Object // the same, with their resource versions
	history  []change                     // the last historyLength changes, oldest first
	watchers map[*fileWatch]struct{}
}

type objectKey struct {
	kind, namespace, name string
}

// change is one object's change at version rv: old is nil for an
// addition, obj nil for a deletion.
type change struct {
	rv       uint64
	kind     string
	old, obj runtime.Object
}

// historyLength is how many changes a watch may start behind; one from
// further back is told its version is too old (410), and relists.
const historyLength = 1024

// startFileSource loads dir once (an unreadable or invalid directory is an
// error) and keeps re-reading it until ctx is done.
func startFileSource(ctx context.Context, log *zap.Logger, dir string, period time.Duration) (*fileSource, error) {
	s := &fileSource{log: log, dir: dir, read: map[objectKey]runtime.Object{}, served: map[objectKey]runtime.Object{},
		watchers: map[*fileWatch]struct{}{}}
	if err := s.reload(); err != nil {
		return nil, fmt.Errorf("reading objects from %s: %w", dir, err)
	}
	go func() {
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if err := s.reload(); err != nil {
					s.log.Error("reading objects; keeping the previous ones", zap.String("dir", dir), zap.Error(err))
				}
			}
		}
	}()
	return s, nil
}

// reload reads every file and applies the differences. When any file is
// bad nothing is applied, so a half-written file deletes nothing.
func (s *fileSource) reload() error {
	next, err := readObjects(s.dir)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// In key order, so the same files give the same versions every time.
	for _, k := range slices.SortedFunc(maps.Keys(next), objectKey.compare) {
		obj := next[k]
		if old, ok := s.read[k]; ok && reflect.DeepEqual(old, obj) {
			continue
		}
		s.read[k] = obj
		s.record(k, obj)
	}
	for _, k := range slices.SortedFunc(maps.Keys(s.read), objectKey.compare) {
		if _, ok := next[k]; !ok {
			delete(s.read, k)
			s.record(k, nil)
		}
	}
	return nil
}

// compare orders keys by kind, namespace and name.
func (k objectKey) compare(o objectKey) int {
	return cmp.Or(strings.Compare(k.kind, o.kind), strings.Compare(k.namespace, o.namespace), strings.Compare(k.name, o.name))
}

// record serves obj as k at the next version (nil: k is deleted) and
// tells the watchers.
func (s *fileSource) record(k objectKey, obj runtime.Object) {
	s.rv++
	c := change{rv: s.rv, kind: k.kind, old: s.served[k]}
	if obj != nil {
		c.obj = s.versioned(k, obj)
		s.served[k] = c.obj
	} else { // a deletion carries the object's last state, at its own version
		c.old = s.versioned(k, c.old)
		delete(s.served, k)
	}
	s.history = append(s.history, c)
	if len(s.history) > historyLength {
		s.history = slices.Delete(s.history, 0, len(s.history)-historyLength)
	}
	for w := range s.watchers {
		w.send(c)
	}
}

// versioned is a copy of obj at the current version.
func (s *fileSource) versioned(k objectKey, obj runtime.Object) runtime.Object {
	obj = obj.DeepCopyObject()
	if m, err := meta.Accessor(obj); err == nil {
		m.SetResourceVersion(strconv.FormatUint(s.rv, 10))
	} else {
		s.log.Error("versioning an object", zap.Any("object", k), zap.Error(err))
	}
	return obj
}

// Services serves the Services that sel selects.
func (s *fileSource) Services(sel labels.Selector) cache.ListerWatcher {
	return s.listWatch("Service", func() runtime.Object { return &v1.ServiceList{} }, byLabels(sel))
}

// EndpointSlices serves the EndpointSlices that sel selects.
func (s *fileSource) EndpointSlices(sel labels.Selector) cache.ListerWatcher {
	return s.listWatch("EndpointSlice", func() runtime.Object { return &discovery.EndpointSliceList{} }, byLabels(sel))
}

// Node serves the Node called name.
func (s *fileSource) Node(name string) cache.ListerWatcher {
	return s.listWatch("Node", func() runtime.Object { return &v1.NodeList{} }, func(m metav1.Object) bool { return m.GetName() == name })
}

func byLabels(sel labels.Selector) func(metav1.Object) bool {
	return func(m metav1.Object) bool { return sel.Matches(labels.Set(m.GetLabels())) }
}

// fileListWatch lists and watches one kind of a fileSource's objects,
// those keep accepts.
type fileListWatch struct {
	s       *fileSource
	kind    string
	newList func() runtime.Object
	keep    func(metav1.Object) bool
}

func (s *fileSource) listWatch(kind string, newList func() runtime.Object, keep func(metav1.Object) bool) cache.ListerWatcher {
	return &fileListWatch{s: s, kind: kind, newList: newList, keep: keep}
}

// IsWatchListSemanticsUnSupported tells the informers to list and then
// watch: a fileSource does not stream a watch's initial objects.
func (*fileListWatch) IsWatchListSemanticsUnSupported() bool { return true }

// kept reports whether obj (nil: no) is one the list and watch serve.
func (lw *fileListWatch) kept(obj runtime.Object) bool {
	if obj == nil {
		return false
	}
	m, err := meta.Accessor(obj)
	return err == nil && lw.keep(m)
}

// List returns the objects served now, at the current version.
func (lw *fileListWatch) List(metav1.ListOptions) (runtime.Object, error) {
	lw.s.mu.Lock()
	defer lw.s.mu.Unlock()
	var items []runtime.Object
	for k, obj := range lw.s.served {
		if k.kind == lw.kind && lw.kept(obj) {
			items = append(items, obj.DeepCopyObject())
		}
	}
	slices.SortFunc(items, func(a, b runtime.Object) int {
		ma, _ := meta.Accessor(a)
		mb, _ := meta.Accessor(b)
		return strings.Compare(ma.GetNamespace()+"/"+ma.GetName(), mb.GetNamespace()+"/"+mb.GetName())
	})
	list := lw.newList()
	if err := meta.SetList(list, items); err != nil {
		return nil, err
	}
	l, err := meta.ListAccessor(list)
	if err != nil {
		return nil, err
	}
	l.SetResourceVersion(strconv.FormatUint(lw.s.rv, 10))
	return list, nil
}

// Watch streams the changes after opts.ResourceVersion, as the apiserver
// does: from an empty or "0" version, first every object served now as
// ADDED; an object that stops or starts matching is DELETED or ADDED.
func (lw *fileListWatch) Watch(opts metav1.ListOptions) (watch.Interface, error) {
	s := lw.s
	s.mu.Lock()
	defer s.mu.Unlock()
	w := &fileWatch{lw: lw, result: make(chan watch.Event), stop: make(chan struct{}), wake: make(chan struct{}, 1)}
	switch rv := opts.ResourceVersion; rv {
	case "", "0":
		for k, obj := range s.served {
			if k.kind == lw.kind {
				w.send(change{kind: k.kind, obj: obj})
			}
		}
	default:
		from, err := strconv.ParseUint(rv, 10, 64)
		if err != nil {
			return nil, apierrors.NewBadRequest(fmt.Sprintf("resourceVersion %q is not a number", rv))
		}
		if len(s.history) > 0 && from+1 < s.history[0].rv || from > s.rv {
			return nil, apierrors.NewResourceExpired(fmt.Sprintf("resource version %d is not kept (the source is at %d)", from, s.rv))
		}
		for _, c := range s.history {
			if c.rv > from {
				w.send(c)
			}
		}
	}
	s.watchers[w] = struct{}{}
	go w.pump()
	return w, nil
}

// fileWatch is one watch on a fileSource. Its events queue without bound,
// so a slow informer never holds the source back.
type fileWatch struct {
	lw     *fileListWatch
	result chan watch.Event
	stop   chan struct{}
	once   sync.Once

	mu    sync.Mutex
	queue []watch.Event
	wake  chan struct{}
}

// send queues c as this watch sees it, if it sees it at all.
func (w *fileWatch) send(c change) {
	if c.kind != w.lw.kind {
		return
	}
	was, is := w.lw.kept(c.old), w.lw.kept(c.obj)
	var e watch.Event
	switch {
	case was && is:
		e = watch.Event{Type: watch.Modified, Object: c.obj}
	case is:
		e = watch.Event{Type: watch.Added, Object: c.obj}
	case was && c.obj == nil:
		e = watch.Event{Type: watch.Deleted, Object: c.old}
	case was: // changed out of the selection
		e = watch.Event{Type: watch.Deleted, Object: c.obj}
	default:
		return
	}
	e.Object = e.Object.DeepCopyObject()
	w.mu.Lock()
	w.queue = append(w.queue, e)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *fileWatch) pump() {
	defer close(w.result)
	for {
		w.mu.Lock()
		q := w.queue
		w.queue = nil
		w.mu.Unlock()
		for _, e := range q {
			select {
			case w.result <- e:
			case <-w.stop:
				return
			}
		}
		select {
		case <-w.wake:
		case <-w.stop:
			return
		}
	}
}

// ResultChan is the watch's events.
func (w *fileWatch) ResultChan() <-chan watch.Event { return w.result }

// Stop ends the watch.
func (w *fileWatch) Stop() {
	w.once.Do(func() {
		close(w.stop)
		w.lw.s.mu.Lock()
		delete(w.lw.s.watchers, w)
		w.lw.s.mu.Unlock()
	})
}

// readObjects decodes the Services, EndpointSlices and Nodes of every
// .yaml, .yml and .json file in dir; multi-document files are split on "---".
// Other kinds are an error, so a typo does not silently drop an object.
func readObjects(dir string) (map[objectKey]runtime.Object, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	out := map[objectKey]runtime.Object{}
	decode := kubeapi.Codecs.UniversalDeserializer().Decode
	for _, e := range entries {
		ext := filepath.Ext(e.Name())
		if e.IsDir() || !slices.Contains([]string{".yaml", ".yml", ".json"}, ext) {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		for i, doc := range splitDocuments(data) {
			obj, gvk, err := decode(doc, nil, nil)
			if err != nil {
				return nil, fmt.Errorf("%s document %d: %w", e.Name(), i+1, err)
			}
			m, ok := obj.(metav1.Object)
			_, svc := obj.(*v1.Service)
			_, eps := obj.(*discovery.EndpointSlice)
			_, node := obj.(*v1.Node)
			if !ok || !(svc || eps || node) {
				return nil, fmt.Errorf("%s document %d: kind %s is not a Service, an EndpointSlice or a Node", e.Name(), i+1, gvk.Kind)
			}
			switch {
			case node: // cluster-scoped
				m.SetNamespace("")
			case m.GetNamespace() == "":
				m.SetNamespace(metav1.NamespaceDefault)
			}
			out[objectKey{gvk.Kind, m.GetNamespace(), m.GetName()}] = obj
		}
	}
	return out, nil
}

// splitDocuments splits a YAML stream on lines that are exactly "---".
func splitDocuments(data []byte) [][]byte {
	var docs [][]byte
	for _, d := range strings.Split("\n"+string(data), "\n---") {
		if b := bytes.TrimSpace([]byte(d)); len(b) > 0 {
			docs = append(docs, b)
		}
	}
	return docs
}
