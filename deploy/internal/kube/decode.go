// Package kube checks rendered Kubernetes manifests against the official API
// types: every document is decoded strictly into its typed object from
// client-go's scheme plus the prometheus-operator types (ServiceMonitor,
// PodMonitor, PrometheusRule; an unknown kind, an unknown or misspelled
// field, a duplicate field or a wrong type fails), then cross-checked: names
// that one object refers to exist, probes point at declared ports,
// ServiceMonitors and PodMonitors select a port that exists, rules are well
// formed, and the portbridge container keeps its security settings. No
// schema is downloaded.
package kube

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/json"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	sigsyaml "sigs.k8s.io/yaml"
)

// Object is one decoded document.
type Object struct {
	Source string // where it came from, for messages: "file#index"
	Kind   string
	Name   string
	Obj    runtime.Object
}

func (o Object) String() string { return fmt.Sprintf("%s %s (%s)", o.Kind, o.Name, o.Source) }

// Decode splits a multi-document YAML stream and decodes every non-empty
// document strictly into its typed object. source names the stream in errors.
// All problems are returned together.
func Decode(source string, data []byte) ([]Object, error) {
	scheme, err := newScheme()
	if err != nil {
		return nil, err
	}
	strict := json.NewSerializerWithOptions(json.DefaultMetaFactory, scheme, scheme,
		json.SerializerOptions{Yaml: true, Strict: true})
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var out []Object
	var errs []error
	for i := 0; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: split documents: %w", source, err)
		}
		src := fmt.Sprintf("%s#%d", source, i)
		var probe map[string]any
		if err := sigsyaml.Unmarshal(doc, &probe); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", src, err))
			continue
		}
		if len(probe) == 0 {
			continue // comments only
		}
		obj, gvk, err := strict.Decode(doc, nil, nil)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", src, err))
			continue
		}
		if gvk.Empty() || gvk.Version == "" {
			errs = append(errs, fmt.Errorf("%s: no apiVersion/kind", src))
			continue
		}
		out = append(out, Object{Source: src, Kind: gvk.Kind, Name: nameOf(probe), Obj: obj})
	}
	return out, errors.Join(errs...)
}

// newScheme knows the built-in Kubernetes types and the prometheus-operator
// monitoring.coreos.com/v1 types.
func newScheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		return nil, fmt.Errorf("register the Kubernetes API types: %w", err)
	}
	if err := monitoringv1.AddToScheme(s); err != nil {
		return nil, fmt.Errorf("register the monitoring.coreos.com/v1 types: %w", err)
	}
	return s, nil
}

func nameOf(doc map[string]any) string {
	if md, ok := doc["metadata"].(map[string]any); ok {
		if n, ok := md["name"].(string); ok {
			return n
		}
	}
	return ""
}

// DecodeInto strictly decodes a YAML fragment (for example a list of
// containers from a values file) into out, a pointer to an API type such as
// *[]corev1.Container. Unknown or duplicate fields fail.
func DecodeInto(source string, fragment any, out any) error {
	b, err := sigsyaml.Marshal(fragment)
	if err != nil {
		return fmt.Errorf("%s: %w", source, err)
	}
	if err := sigsyaml.UnmarshalStrict(b, out); err != nil {
		return fmt.Errorf("%s: %w", source, err)
	}
	return nil
}

// Kinds lists "Kind/name" for every object, in order.
func Kinds(objs []Object) string {
	var parts []string
	for _, o := range objs {
		parts = append(parts, o.Kind+"/"+o.Name)
	}
	return strings.Join(parts, ", ")
}
