package crdref

import (
	"fmt"
	"reflect"
	"strings"
)

// foreignTypes maps the JSON path of every field whose Go type (or element type, for lists
// and maps) comes from outside ownPackage to that type. The CRD schema alone cannot tell an
// EnvVar from one of this project's structs, and the reference links such types to the
// Kubernetes documentation instead of repeating hundreds of their fields.
func foreignTypes(root reflect.Type, ownPackage string) map[string]reflect.Type {
	found := map[string]reflect.Type{}
	walkFields(root, "", ownPackage, found)
	return found
}

func walkFields(t reflect.Type, prefix, ownPackage string, found map[string]reflect.Type) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return
	}
	for i := range t.NumField() {
		field := t.Field(i)
		name, inline := jsonName(field)
		if name == "-" {
			continue
		}
		if inline {
			walkFields(field.Type, prefix, ownPackage, found)
			continue
		}
		path := joinPath(prefix, name)
		elem := elementType(field.Type)
		switch {
		case elem.PkgPath() == "" || elem.Name() == "" || elem.Kind() != reflect.Struct:
			// Built-in types (string, int32, map[string]string) and named strings such as
			// PullPolicy are described fully by the schema.
		case !strings.HasPrefix(elem.PkgPath(), ownPackage):
			found[path] = elem
		default:
			walkFields(elem, path, ownPackage, found)
		}
	}
}

// jsonName is the field's name in JSON and whether its fields are inlined into the parent.
func jsonName(field reflect.StructField) (string, bool) {
	tag := field.Tag.Get("json")
	name, opts, _ := strings.Cut(tag, ",")
	if name == "" && (field.Anonymous || strings.Contains(","+opts+",", ",inline,")) {
		return "", true
	}
	if name == "" {
		return field.Name, false
	}
	return name, false
}

// elementType looks through pointers, slices and maps to the type a field holds.
func elementType(t reflect.Type) reflect.Type {
	for {
		switch t.Kind() {
		case reflect.Pointer, reflect.Slice, reflect.Array, reflect.Map:
			t = t.Elem()
		default:
			return t
		}
	}
}

func joinPath(prefix, name string) string {
	if prefix == "" {
		return name
	}
	return prefix + "." + name
}

// Go types the reference names by what they hold rather than linking, because the Kubernetes
// API reference has no entry of their own for them.
const (
	durationType = "k8s.io/apimachinery/pkg/apis/meta/v1.Duration"
	timeType     = "k8s.io/apimachinery/pkg/apis/meta/v1.Time"
	quantityType = "k8s.io/apimachinery/pkg/api/resource.Quantity"
)

func qualifiedName(t reflect.Type) string { return t.PkgPath() + "." + t.Name() }

// typeLink is Markdown naming a foreign type, linked to its documentation: the Kubernetes
// API reference of kubeMinor (such as "v1.37") for API types, pkg.go.dev for anything else.
func typeLink(t reflect.Type, kubeMinor string) string {
	switch qualifiedName(t) {
	case durationType:
		return "[duration](https://pkg.go.dev/time#ParseDuration)"
	case quantityType:
		return "[quantity](https://kubernetes.io/docs/reference/kubernetes-api/common-definitions/quantity/)"
	}
	if anchor, ok := apiReferenceAnchor(t.PkgPath(), t.Name()); ok {
		return fmt.Sprintf("[%s](https://kubernetes.io/docs/reference/generated/kubernetes-api/%s/#%s)", t.Name(), kubeMinor, anchor)
	}
	return fmt.Sprintf("[%s](https://pkg.go.dev/%s#%s)", t.Name(), t.PkgPath(), t.Name())
}

// apiReferenceAnchor is the anchor of a type in the generated Kubernetes API reference,
// which names types kind-version-group: envvar-v1-core, condition-v1-meta.
func apiReferenceAnchor(pkgPath, name string) (string, bool) {
	const apiPrefix, metaPath = "k8s.io/api/", "k8s.io/apimachinery/pkg/apis/meta/"
	lower := strings.ToLower(name)
	switch {
	case strings.HasPrefix(pkgPath, apiPrefix):
		group, version, ok := strings.Cut(strings.TrimPrefix(pkgPath, apiPrefix), "/")
		if !ok || strings.Contains(version, "/") {
			return "", false
		}
		return lower + "-" + version + "-" + group, true
	case strings.HasPrefix(pkgPath, metaPath):
		version := strings.TrimPrefix(pkgPath, metaPath)
		if strings.Contains(version, "/") {
			return "", false
		}
		return lower + "-" + version + "-meta", true
	}
	return "", false
}
