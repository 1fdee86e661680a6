package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"
	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/kubernetes/scheme"
	k8stesting "k8s.io/client-go/testing"
)

// fileSource serves Services, EndpointSlices and Nodes read from YAML
// files through an in-memory clientset, so the agent runs its real
// informer path without an apiserver. Like the apiserver, it honours a
// field selector on metadata.name, so an agent sees only its own Node (the
// one named --node-name) when the directory holds every node's. Files are re-read every period; objects that
// appear, change or disappear become create, update and delete events.
type fileSource struct {
	log     *zap.Logger
	dir     string
	client  *fake.Clientset
	current map[objectKey]runtime.Object
}

type objectKey struct {
	kind, namespace, name string
}

// startFileSource loads dir once (an unreadable or invalid directory is an
// error) and keeps re-reading it until ctx is done.
func startFileSource(ctx context.Context, log *zap.Logger, dir string, period time.Duration) (kubernetes.Interface, error) {
	s := &fileSource{log: log, dir: dir, client: fake.NewClientset(), current: map[objectKey]runtime.Object{}}
	selectByName(s.client)
	if err := s.reload(ctx); err != nil {
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
				if err := s.reload(ctx); err != nil {
					s.log.Error("reading objects; keeping the previous ones", zap.String("dir", dir), zap.Error(err))
				}
			}
		}
	}()
	return s.client, nil
}

// reload reads every file and applies the differences. When any file is
// bad nothing is applied, so a half-written file deletes nothing.
func (s *fileSource) reload(ctx context.Context) error {
	next, err := readObjects(s.dir)
	if err != nil {
		return err
	}
	for k, obj := range next {
		old, ok := s.current[k]
		if ok && reflect.DeepEqual(old, obj) {
			continue
		}
		if err := s.write(ctx, obj, ok); err != nil {
			return err
		}
		s.current[k] = obj
	}
	for k, obj := range s.current {
		if _, ok := next[k]; ok {
			continue
		}
		if err := s.remove(ctx, obj); err != nil {
			return err
		}
		delete(s.current, k)
	}
	return nil
}

func (s *fileSource) write(ctx context.Context, obj runtime.Object, exists bool) error {
	switch o := obj.(type) {
	case *v1.Service:
		return put(ctx, s.client.CoreV1().Services(o.Namespace), o, exists)
	case *discovery.EndpointSlice:
		return put(ctx, s.client.DiscoveryV1().EndpointSlices(o.Namespace), o, exists)
	case *v1.Node:
		return put(ctx, s.client.CoreV1().Nodes(), o, exists)
	}
	return nil
}

func (s *fileSource) remove(ctx context.Context, obj runtime.Object) error {
	switch o := obj.(type) {
	case *v1.Service:
		return s.client.CoreV1().Services(o.Namespace).Delete(ctx, o.Name, metav1.DeleteOptions{})
	case *discovery.EndpointSlice:
		return s.client.DiscoveryV1().EndpointSlices(o.Namespace).Delete(ctx, o.Name, metav1.DeleteOptions{})
	case *v1.Node:
		return s.client.CoreV1().Nodes().Delete(ctx, o.Name, metav1.DeleteOptions{})
	}
	return nil
}

// writer is the part of a typed client (CoreV1().Services(ns), …) that
// put uses.
type writer[T any] interface {
	Create(context.Context, T, metav1.CreateOptions) (T, error)
	Update(context.Context, T, metav1.UpdateOptions) (T, error)
}

// put creates obj, or updates it when it exists, like `kubectl apply`.
func put[T interface{ DeepCopy() T }](ctx context.Context, c writer[T], obj T, exists bool) error {
	var err error
	if exists {
		_, err = c.Update(ctx, obj.DeepCopy(), metav1.UpdateOptions{})
	} else {
		_, err = c.Create(ctx, obj.DeepCopy(), metav1.CreateOptions{})
	}
	return err
}

// selectByName makes the fake clientset honour a field selector on
// metadata.name or metadata.namespace in list and watch, as the apiserver
// does (the fake ignores field selectors): the agent's Node informer asks
// for its own Node (--node-name), and a directory may hold several.
func selectByName(c *fake.Clientset) {
	tracker := c.Tracker()
	c.PrependReactor("list", "*", func(a k8stesting.Action) (bool, runtime.Object, error) {
		l, ok := a.(k8stesting.ListActionImpl)
		if !ok || l.ListRestrictions.Fields == nil || l.ListRestrictions.Fields.Empty() {
			return false, nil, nil
		}
		sel := l.ListRestrictions.Fields
		list, err := tracker.List(l.GetResource(), l.GetKind(), l.GetNamespace(), l.ListOptions)
		if err != nil {
			return true, nil, err
		}
		items, err := meta.ExtractList(list)
		if err != nil {
			return true, nil, err
		}
		items = slices.DeleteFunc(items, func(o runtime.Object) bool { return !selected(sel, o) })
		return true, list, meta.SetList(list, items)
	})
	c.PrependWatchReactor("*", func(a k8stesting.Action) (bool, watch.Interface, error) {
		w, ok := a.(k8stesting.WatchActionImpl)
		if !ok || w.WatchRestrictions.Fields == nil || w.WatchRestrictions.Fields.Empty() {
			return false, nil, nil
		}
		sel := w.WatchRestrictions.Fields
		all, err := tracker.Watch(w.GetResource(), w.GetNamespace(), w.ListOptions)
		if err != nil {
			return true, nil, err
		}
		return true, watch.Filter(all, func(e watch.Event) (watch.Event, bool) {
			_, isObj := e.Object.(metav1.Object)
			return e, !isObj || selected(sel, e.Object)
		}), nil
	})
}

// selected reports whether obj's name and namespace match sel.
func selected(sel fields.Selector, obj runtime.Object) bool {
	m, err := meta.Accessor(obj)
	return err == nil && sel.Matches(fields.Set{"metadata.name": m.GetName(), "metadata.namespace": m.GetNamespace()})
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
	decode := scheme.Codecs.UniversalDeserializer().Decode
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
