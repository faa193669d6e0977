package crdref

import (
	"encoding/json"
	"fmt"

	"sigs.k8s.io/yaml"
)

// crd is the part of a CustomResourceDefinition the reference shows. It is decoded into
// these few structs rather than the apiextensions types to keep that module out of the
// build: the reference needs a dozen fields, not the whole API.
type crd struct {
	Spec struct {
		Group string `json:"group"`
		Scope string `json:"scope"`
		Names struct {
			Kind       string   `json:"kind"`
			Plural     string   `json:"plural"`
			ShortNames []string `json:"shortNames"`
			Categories []string `json:"categories"`
		} `json:"names"`
		Versions []crdVersion `json:"versions"`
	} `json:"spec"`
}

type crdVersion struct {
	Name    string `json:"name"`
	Served  bool   `json:"served"`
	Storage bool   `json:"storage"`
	Schema  struct {
		OpenAPIV3Schema *schema `json:"openAPIV3Schema"`
	} `json:"schema"`
	Subresources struct {
		Status *struct{} `json:"status"`
		Scale  *struct {
			SpecReplicasPath   string `json:"specReplicasPath"`
			StatusReplicasPath string `json:"statusReplicasPath"`
			LabelSelectorPath  string `json:"labelSelectorPath"`
		} `json:"scale"`
	} `json:"subresources"`
	PrinterColumns []struct {
		Name     string `json:"name"`
		Type     string `json:"type"`
		JSONPath string `json:"jsonPath"`
		Priority int    `json:"priority"`
	} `json:"additionalPrinterColumns"`
}

// schema is an OpenAPI v3 schema as a structural CRD writes it.
type schema struct {
	Description          string             `json:"description"`
	Type                 string             `json:"type"`
	Format               string             `json:"format"`
	Properties           map[string]*schema `json:"properties"`
	Required             []string           `json:"required"`
	Items                *schema            `json:"items"`
	AdditionalProperties json.RawMessage    `json:"additionalProperties"`
	Default              json.RawMessage    `json:"default"`
	Enum                 []json.RawMessage  `json:"enum"`
	Minimum              *float64           `json:"minimum"`
	Maximum              *float64           `json:"maximum"`
	ExclusiveMinimum     bool               `json:"exclusiveMinimum"`
	ExclusiveMaximum     bool               `json:"exclusiveMaximum"`
	MinLength            *int64             `json:"minLength"`
	MaxLength            *int64             `json:"maxLength"`
	MinItems             *int64             `json:"minItems"`
	MaxItems             *int64             `json:"maxItems"`
	MinProperties        *int64             `json:"minProperties"`
	MaxProperties        *int64             `json:"maxProperties"`
	Pattern              string             `json:"pattern"`
	AnyOf                []*schema          `json:"anyOf"`
	IntOrString          bool               `json:"x-kubernetes-int-or-string"`
	PreserveUnknown      bool               `json:"x-kubernetes-preserve-unknown-fields"`
	ListType             string             `json:"x-kubernetes-list-type"`
	ListMapKeys          []string           `json:"x-kubernetes-list-map-keys"`
	Validations          []struct {
		Rule    string `json:"rule"`
		Message string `json:"message"`
	} `json:"x-kubernetes-validations"`
}

// mapValues is the schema of a map's values, or nil when s is no map.
func (s *schema) mapValues() (*schema, error) {
	if len(s.AdditionalProperties) == 0 {
		return nil, nil
	}
	var allowed bool
	if json.Unmarshal(s.AdditionalProperties, &allowed) == nil {
		if allowed {
			return &schema{}, nil
		}
		return nil, nil
	}
	var values schema
	if err := json.Unmarshal(s.AdditionalProperties, &values); err != nil {
		return nil, fmt.Errorf("additionalProperties: %w", err)
	}
	return &values, nil
}

func (s *schema) isRequired(field string) bool {
	for _, r := range s.Required {
		if r == field {
			return true
		}
	}
	return false
}

func parseCRD(manifest []byte) (*crd, error) {
	var c crd
	if err := yaml.Unmarshal(manifest, &c); err != nil {
		return nil, fmt.Errorf("parse CRD: %w", err)
	}
	if c.Spec.Names.Kind == "" || len(c.Spec.Versions) == 0 {
		return nil, fmt.Errorf("parse CRD: no kind or no versions")
	}
	return &c, nil
}
