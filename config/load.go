package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// FieldError is one problem with one field. Every error that Load, Validate
// and Flags.Resolve report is a *FieldError (joined with errors.Join), except
// a YAML syntax error and a file that cannot be read, which stop everything.
type FieldError struct {
	// Field is the path of the field in the document ("ipvs.syncPeriod"),
	// possibly followed by the flag that set it ("ipvs.scheduler (--scheduler)").
	// It is empty for a problem with the document as a whole.
	Field string
	// Detail says what is wrong and quotes the bad value.
	Detail string
}

func (e *FieldError) Error() string {
	if e.Field == "" {
		return "document: " + e.Detail
	}
	return e.Field + ": " + e.Detail
}

func fieldErrorf(field, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Detail: fmt.Sprintf(format, args...)}
}

// Load reads a YAML document over Default(): fields the document leaves out
// (or sets to null) keep their default. It then validates the result.
//
// The document is a KubeIPVSConfiguration, or kube-proxy's
// KubeProxyConfiguration (kubeproxy.config.k8s.io/v1alpha1, chosen by its
// apiVersion or kind), which is decoded strictly with kube-proxy's
// published type and translated as the package documentation says. Its
// errors name the fields as that file spells them (hostnameOverride,
// iptables.masqueradeBit, …), and the fields it sets that kube-ipvs does
// not honour are named by one of the Warnings.
//
// Every problem is reported at once, joined with errors.Join, each naming the
// field's path and quoting the bad value: unknown fields at any depth
// ("ipvs.schedular: unknown field"), values of the wrong type ("masqueradeBit:
// invalid value \"x\": must be an integer"), bad durations
// ("ipvs.syncPeriod: invalid duration \"3x\""), a missing or wrong apiVersion
// or kind, and everything Validate finds. Keys match case-sensitively, as in
// Kubernetes. Only a YAML syntax error (including a duplicate key) is reported
// alone. On error the Configuration is nil.
//
// Load does not resolve NodeName; Flags.Resolve does.
func Load(data []byte) (*Configuration, error) {
	cfg, errs, err := decode(data)
	if err != nil {
		return nil, err
	}
	for _, err := range cfg.validate() {
		errs = append(errs, cfg.inFile(err))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return cfg, nil
}

// decode overlays data on Default() and returns the field errors found while
// decoding; err is set only when the document is not YAML at all. A
// KubeProxyConfiguration (see isKubeProxy) is translated by decodeKubeProxy.
// The Configuration is not nil when err is nil, even with field errors, so
// that flags can still be applied to it and every problem be reported.
func decode(data []byte) (*Configuration, []error, error) {
	jsonData, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return nil, nil, fmt.Errorf("parsing YAML: %w", err)
	}
	cfg := Default()
	raw := json.RawMessage(jsonData)
	if isNull(raw) {
		raw = json.RawMessage("{}") // an empty document
	}
	var top map[string]json.RawMessage
	if json.Unmarshal(raw, &top) != nil {
		return nil, nil, errors.Join(fieldErrorf("", "invalid value %s: must be a mapping", abbreviate(raw)))
	}
	if isKubeProxy(top) {
		cfg, errs := decodeKubeProxy(raw, top)
		return cfg, errs, nil
	}
	errs := decodeStruct("", top, reflect.ValueOf(cfg).Elem())
	for _, key := range []string{"apiVersion", "kind"} {
		if v, ok := top[key]; !ok || isNull(v) {
			want := map[string]string{"apiVersion": APIVersion, "kind": Kind}[key]
			errs = append(errs, fieldErrorf(key, "missing: must be %q", want))
		}
	}
	return cfg, errs, nil
}

// decodeStruct decodes the members of a JSON object into the struct v, in key
// order, reporting every unknown key and every value that does not decode.
func decodeStruct(path string, obj map[string]json.RawMessage, v reflect.Value) []error {
	fields := jsonFields(v.Type())
	var errs []error
	for _, key := range slices.Sorted(maps.Keys(obj)) {
		p := joinPath(path, key)
		index, ok := fields[key]
		if !ok {
			errs = append(errs, unknownField(p, key, fields))
			continue
		}
		if raw := obj[key]; !isNull(raw) {
			errs = append(errs, decodeValue(p, raw, v.FieldByIndex(index))...)
		}
	}
	return errs
}

// metaDuration is the duration type of Kubernetes' API types (kube-proxy's
// syncPeriod, …): it reads the same strings as Duration.
var metaDuration = reflect.TypeFor[metav1.Duration]()

// decodeValue decodes one JSON value into the field v: through its own
// UnmarshalJSON if it has one, as a nested section if it is a struct, into
// a fresh value if it is a pointer, and as a plain scalar otherwise.
func decodeValue(path string, raw json.RawMessage, v reflect.Value) []error {
	if v.Type() == metaDuration {
		var d Duration
		if err := d.UnmarshalJSON(raw); err != nil {
			return []error{&FieldError{Field: path, Detail: err.Error()}}
		}
		v.Set(reflect.ValueOf(metav1.Duration{Duration: d.Duration}))
		return nil
	}
	if u, ok := v.Addr().Interface().(json.Unmarshaler); ok {
		if err := u.UnmarshalJSON(raw); err != nil {
			detail := err.Error()
			if _, ours := u.(*Duration); !ours {
				detail = fmt.Sprintf("invalid value %s: %v", abbreviate(raw), err)
			}
			return []error{&FieldError{Field: path, Detail: detail}}
		}
		return nil
	}
	if v.Kind() == reflect.Pointer {
		fresh := reflect.New(v.Type().Elem())
		errs := decodeValue(path, raw, fresh.Elem())
		if len(errs) == 0 {
			v.Set(fresh)
		}
		return errs
	}
	if v.Kind() == reflect.Struct {
		var obj map[string]json.RawMessage
		if json.Unmarshal(raw, &obj) != nil {
			return []error{fieldErrorf(path, "invalid value %s: must be a mapping", abbreviate(raw))}
		}
		return decodeStruct(path, obj, v)
	}
	// Decode into a fresh value so that a failure leaves the default intact.
	fresh := reflect.New(v.Type())
	if err := json.Unmarshal(raw, fresh.Interface()); err != nil {
		want := kindName(v.Type())
		if v.Kind() == reflect.String && raw[0] != '{' && raw[0] != '[' {
			want += " (quote it in YAML)"
		}
		var single string
		if v.Kind() == reflect.Slice && json.Unmarshal(raw, &single) == nil {
			want += " (write a YAML list: [" + single + "])"
		}
		return []error{fieldErrorf(path, "invalid value %s: must be %s", abbreviate(raw), want)}
	}
	v.Set(fresh.Elem())
	return nil
}

// unknownField reports a key the schema does not have, with a hint when it
// differs from a known key only in case.
func unknownField(path, key string, fields map[string][]int) error {
	for known := range fields {
		if strings.EqualFold(known, key) {
			return fieldErrorf(path, "unknown field (did you mean %q?)", known)
		}
	}
	return fieldErrorf(path, "unknown field")
}

// jsonFields maps the JSON names of a struct's fields to their indexes
// (for reflect.Value.FieldByIndex). The fields of an embedded struct with
// no JSON name of its own (metav1.TypeMeta in `json:",inline"`) are
// members of the outer object, as encoding/json reads them.
func jsonFields(t reflect.Type) map[string][]int {
	fields := make(map[string][]int, t.NumField())
	for i := range t.NumField() {
		f := t.Field(i)
		if inlined(f) {
			for name, index := range jsonFields(f.Type) {
				fields[name] = append([]int{i}, index...)
			}
			continue
		}
		if name, ok := jsonName(f); ok {
			fields[name] = []int{i}
		}
	}
	return fields
}

// inlined reports whether f is an embedded struct whose fields encoding/json
// reads as the outer object's.
func inlined(f reflect.StructField) bool {
	name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
	return f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct
}

func jsonName(f reflect.StructField) (string, bool) {
	if !f.IsExported() {
		return "", false
	}
	name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
	switch name {
	case "-":
		return "", false
	case "":
		return f.Name, true
	}
	return name, true
}

func kindName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Pointer:
		return kindName(t.Elem())
	case reflect.Map:
		return "a mapping to " + kindName(t.Elem())
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.String {
			return "a list of strings"
		}
		return "a list"
	}
	return "a " + t.Kind().String()
}

func joinPath(prefix, key string) string {
	if prefix == "" {
		return key
	}
	return prefix + "." + key
}

func isNull(raw json.RawMessage) bool {
	return len(raw) == 0 || string(raw) == "null"
}
