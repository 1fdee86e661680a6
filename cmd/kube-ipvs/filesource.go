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
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/kubernetes/scheme"
)

// fileSource serves Services and EndpointSlices read from YAML files
// through an in-memory clientset, so the agent runs its real informer path
// without an apiserver. Files are re-read every period; objects that
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
	var err error
	switch o := obj.(type) {
	case *v1.Service:
		c := s.client.CoreV1().Services(o.Namespace)
		if exists {
			_, err = c.Update(ctx, o.DeepCopy(), metav1.UpdateOptions{})
		} else {
			_, err = c.Create(ctx, o.DeepCopy(), metav1.CreateOptions{})
		}
	case *discovery.EndpointSlice:
		c := s.client.DiscoveryV1().EndpointSlices(o.Namespace)
		if exists {
			_, err = c.Update(ctx, o.DeepCopy(), metav1.UpdateOptions{})
		} else {
			_, err = c.Create(ctx, o.DeepCopy(), metav1.CreateOptions{})
		}
	}
	return err
}

func (s *fileSource) remove(ctx context.Context, obj runtime.Object) error {
	switch o := obj.(type) {
	case *v1.Service:
		return s.client.CoreV1().Services(o.Namespace).Delete(ctx, o.Name, metav1.DeleteOptions{})
	case *discovery.EndpointSlice:
		return s.client.DiscoveryV1().EndpointSlices(o.Namespace).Delete(ctx, o.Name, metav1.DeleteOptions{})
	}
	return nil
}

// readObjects decodes the Services and EndpointSlices of every .yaml,
// .yml and .json file in dir; multi-document files are split on "---".
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
			if !ok || !(svc || eps) {
				return nil, fmt.Errorf("%s document %d: kind %s is not a Service or an EndpointSlice", e.Name(), i+1, gvk.Kind)
			}
			if m.GetNamespace() == "" {
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
