// Package deploy reads the manifests in the repository's deploy/ directory
// and applies them to an apiserver, for the tests that check them: the unit
// tests here (shape of the DaemonSet, least-privilege RBAC, a config that
// loads) and the tier-3 test that applies them to a real kube-apiserver.
//
// Roughly what this does by hand:
//
//	kubectl apply --validate=strict -f deploy/
package deploy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/yaml"
)

// Object is one document of one manifest file.
type Object struct {
	// File is the file's base name ("04-daemonset.yaml"); Doc is the
	// document's 1-based position in it.
	File string
	Doc  int
	// GVK is the document's apiVersion and kind.
	GVK schema.GroupVersionKind
	// Object is the document decoded into its client-go type
	// (*appsv1.DaemonSet, …).
	Object runtime.Object
	// JSON is the document as written, converted to JSON; Apply sends it.
	JSON []byte
}

// String names the object like `kubectl get` does, with where it came from:
// "DaemonSet kube-system/kube-ipvs (04-daemonset.yaml#1)".
func (o Object) String() string {
	name := "?"
	if m, err := meta.Accessor(o.Object); err == nil {
		name = m.GetName()
		if ns := m.GetNamespace(); ns != "" {
			name = ns + "/" + name
		}
	}
	return fmt.Sprintf("%s %s (%s#%d)", o.GVK.Kind, name, o.File, o.Doc)
}

// strict decodes into the client-go types and refuses unknown and
// duplicate fields, as `kubectl apply --validate=strict` would.
var strict = serializer.NewCodecFactory(scheme.Scheme, serializer.EnableStrict).UniversalDeserializer()

// Dir returns the deploy/ directory of the repository holding the working
// directory: the first ancestor with a go.mod, joined with "deploy".
func Dir() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, "deploy"), nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// Read decodes every document of every .yaml, .yml and .json file in dir,
// files in name order (the order `kubectl apply -f dir` uses), documents
// in file order. Documents holding only comments are skipped. An unknown
// kind, an unknown or duplicate field, or a directory without manifests is
// an error.
func Read(dir string) ([]Object, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []Object
	for _, e := range entries { // os.ReadDir sorts by name
		if e.IsDir() || !slices.Contains([]string{".yaml", ".yml", ".json"}, filepath.Ext(e.Name())) {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		objs, err := decodeFile(e.Name(), data)
		if err != nil {
			return nil, err
		}
		out = append(out, objs...)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no manifests in %s", dir)
	}
	return out, nil
}

// decodeFile splits a multi-document YAML file and decodes each document.
func decodeFile(file string, data []byte) ([]Object, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var out []Object
	for doc := 1; ; doc++ {
		raw, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s document %d: %w", file, doc, err)
		}
		js, err := yaml.YAMLToJSONStrict(raw)
		if err != nil {
			return nil, fmt.Errorf("%s document %d: %w", file, doc, err)
		}
		if s := strings.TrimSpace(string(js)); s == "null" || s == "" {
			continue // only comments: nothing kubectl would send
		}
		obj, gvk, err := strict.Decode(js, nil, nil)
		if err != nil {
			return nil, fmt.Errorf("%s document %d: %w", file, doc, err)
		}
		out = append(out, Object{File: file, Doc: doc, GVK: *gvk, Object: obj, JSON: js})
	}
}

// Apply creates every object, in order, through the dynamic client with
// server-side strict field validation (an unknown field is a 400). A
// namespaced object must name its namespace. It stops at the first error,
// which names the object.
func Apply(ctx context.Context, cfg *rest.Config, objs []Object) error {
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return fmt.Errorf("discovery client: %w", err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("dynamic client: %w", err)
	}
	for _, o := range objs {
		if err := applyOne(ctx, dyn, mapper, o); err != nil {
			return fmt.Errorf("creating %s: %w", o, err)
		}
	}
	return nil
}

func applyOne(ctx context.Context, dyn dynamic.Interface, mapper meta.RESTMapper, o Object) error {
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(o.JSON); err != nil {
		return err
	}
	m, err := mapper.RESTMapping(o.GVK.GroupKind(), o.GVK.Version)
	if err != nil {
		return err
	}
	var ri dynamic.ResourceInterface = dyn.Resource(m.Resource)
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		if u.GetNamespace() == "" {
			return errors.New("namespaced object without metadata.namespace")
		}
		ri = dyn.Resource(m.Resource).Namespace(u.GetNamespace())
	}
	_, err = ri.Create(ctx, u, metav1.CreateOptions{FieldValidation: metav1.FieldValidationStrict})
	return err
}
