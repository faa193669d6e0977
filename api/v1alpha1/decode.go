package v1alpha1

import (
	"encoding/json"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kjson "sigs.k8s.io/json"
)

// Lenient decoding (docs/adr/0012-undecodable-objects.md).
//
// The CRD schema is meant to accept only what these types parse, but an object can still reach
// the operator in a shape they cannot read: stored under an older, laxer CRD, kept by validation
// ratcheting, or written into a schemaless field. client-go decodes a list response as a whole,
// so a single such object would fail every list and watch of its kind: the informer would never
// sync and no pool in any namespace would be reconciled, restart or not.
//
// RunnerPool and Runner therefore decode leniently. When the full decode fails they keep what
// names the object (type and metadata) and the status when it decodes on its own, and record
// why in a field that is never serialised. The reconcilers see DecodeError, report it on the
// object and leave everything else alone. The list types need nothing of their own: the JSON
// decoder (sigs.k8s.io/json, a fork of encoding/json) calls UnmarshalJSON for every item, in
// list responses and watch events alike.

// DecodeError says why the operator could not read the whole object, nil when it could. Such an
// object carries only its type, metadata and (when readable) status; its spec is empty.
func (p *RunnerPool) DecodeError() error { return decodeError(p.decodeError) }

// DecodeError says why the operator could not read the whole object, nil when it could. Such an
// object carries only its type, metadata and (when readable) status; its spec is empty.
func (r *Runner) DecodeError() error { return decodeError(r.decodeError) }

// UnmarshalJSON decodes a RunnerPool, keeping its identity when its spec or status cannot be
// read (see DecodeError).
func (p *RunnerPool) UnmarshalJSON(data []byte) error {
	type plain RunnerPool // the same fields without this method, so the decode below is the default one
	var full plain
	err := kjson.UnmarshalCaseSensitivePreserveInts(data, &full)
	if err == nil {
		*p = RunnerPool(full)
		return nil
	}
	id, ierr := readIdentity(data)
	if ierr != nil {
		return err
	}
	*p = RunnerPool{TypeMeta: id.TypeMeta, ObjectMeta: id.ObjectMeta}
	if len(id.Status) > 0 {
		var status RunnerPoolStatus
		if kjson.UnmarshalCaseSensitivePreserveInts(id.Status, &status) == nil {
			p.Status = status
		}
	}
	p.decodeError = describe(data, reflect.TypeFor[plain](), err)
	return nil
}

// UnmarshalJSON decodes a Runner, keeping its identity when its spec or status cannot be read
// (see DecodeError).
func (r *Runner) UnmarshalJSON(data []byte) error {
	type plain Runner
	var full plain
	err := kjson.UnmarshalCaseSensitivePreserveInts(data, &full)
	if err == nil {
		*r = Runner(full)
		return nil
	}
	id, ierr := readIdentity(data)
	if ierr != nil {
		return err
	}
	*r = Runner{TypeMeta: id.TypeMeta, ObjectMeta: id.ObjectMeta}
	if len(id.Status) > 0 {
		var status RunnerStatus
		if kjson.UnmarshalCaseSensitivePreserveInts(id.Status, &status) == nil {
			r.Status = status
		}
	}
	r.decodeError = describe(data, reflect.TypeFor[plain](), err)
	return nil
}

// identity is the part of an object that names it. When even that does not decode, the object
// is not one the API server served, and the decode fails as it always did.
type identity struct {
	metav1.TypeMeta `json:",inline"`
	ObjectMeta      metav1.ObjectMeta `json:"metadata"`
	Status          json.RawMessage   `json:"status,omitempty"`
}

func readIdentity(data []byte) (identity, error) {
	var id identity
	err := kjson.UnmarshalCaseSensitivePreserveInts(data, &id)
	return id, err
}

type decodeErrorString string

func (e decodeErrorString) Error() string { return string(e) }

func decodeError(msg string) error {
	if msg == "" {
		return nil
	}
	return decodeErrorString(msg)
}

// maxDecodeErrorLength bounds the message, which ends up in a condition and an event: the
// offending value is the user's and may be long.
const maxDecodeErrorLength = 512

// describe names the field that failed, because errors of types with their own decoders (a
// duration, a quantity) do not: "spec.runner.maxAge: time: invalid duration "5 minutes"".
func describe(data []byte, t reflect.Type, err error) string {
	msg := err.Error()
	if path := locate(data, t, ""); path != "" {
		msg = path + ": " + msg
	}
	if len(msg) > maxDecodeErrorLength {
		msg = msg[:maxDecodeErrorLength] + "..."
	}
	return msg
}

// locate returns the JSON path of the deepest value in data that does not decode into t, or ""
// when it finds none. It descends only through structs, slices and maps decoded the default
// way; a type with its own decoder is a leaf.
func locate(data []byte, t reflect.Type, path string) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(reflect.TypeFor[json.Unmarshaler]()) && path != "" {
		return path
	}
	switch t.Kind() {
	case reflect.Struct:
		var fields map[string]json.RawMessage
		if kjson.UnmarshalCaseSensitivePreserveInts(data, &fields) != nil {
			return path
		}
		for _, f := range jsonFields(t) {
			raw, ok := fields[f.name]
			if !ok || decodes(raw, f.typ) {
				continue
			}
			return locate(raw, f.typ, join(path, f.name))
		}
	case reflect.Slice:
		var items []json.RawMessage
		if kjson.UnmarshalCaseSensitivePreserveInts(data, &items) != nil {
			return path
		}
		for i, raw := range items {
			if !decodes(raw, t.Elem()) {
				return locate(raw, t.Elem(), path+"["+strconv.Itoa(i)+"]")
			}
		}
	case reflect.Map:
		var items map[string]json.RawMessage
		if kjson.UnmarshalCaseSensitivePreserveInts(data, &items) != nil {
			return path
		}
		for _, k := range slices.Sorted(maps.Keys(items)) {
			if !decodes(items[k], t.Elem()) {
				return locate(items[k], t.Elem(), path+"["+strconv.Quote(k)+"]")
			}
		}
	}
	return path
}

func decodes(raw json.RawMessage, t reflect.Type) bool {
	return kjson.UnmarshalCaseSensitivePreserveInts(raw, reflect.New(t).Interface()) == nil
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

type jsonField struct {
	name string
	typ  reflect.Type
}

// jsonFields lists t's fields by JSON name, in order, inlined structs flattened, as
// encoding/json sees them.
func jsonFields(t reflect.Type) []jsonField {
	var out []jsonField
	for i := range t.NumField() {
		f := t.Field(i)
		name, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" || (!f.IsExported() && !f.Anonymous) {
			continue
		}
		if f.Anonymous && (name == "" || strings.Contains(","+opts+",", ",inline,")) && f.Type.Kind() == reflect.Struct {
			out = append(out, jsonFields(f.Type)...)
			continue
		}
		if name == "" {
			name = f.Name
		}
		out = append(out, jsonField{name, f.Type})
	}
	return out
}
