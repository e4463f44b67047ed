// Command crdtrim removes the descriptions that controller-gen copies from
// Kubernetes' own types into the embedded pod template of the AgentPool CRD.
// They repeat `kubectl explain pod.spec` word for word and make the CRD too
// large for client-side `kubectl apply` (whose last-applied annotation is
// limited to 256 KiB). agentry's own fields keep their descriptions.
//
//	go run ./hack/crdtrim FILE...
package main

import (
	"bytes"
	"fmt"
	"os"

	"sigs.k8s.io/yaml"
)

func main() {
	for _, path := range os.Args[1:] {
		if err := trim(path); err != nil {
			fmt.Fprintln(os.Stderr, "crdtrim:", err)
			os.Exit(1)
		}
	}
}

func trim(path string) error {
	in, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var crd map[string]any
	if err := yaml.Unmarshal(in, &crd); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	versions, _ := dig(crd, "spec", "versions").([]any)
	for _, v := range versions {
		tmpl, ok := dig(v, "schema", "openAPIV3Schema", "properties", "spec", "properties", "template").(map[string]any)
		if !ok {
			continue
		}
		// Keep the template's own description; drop the ones inside it.
		for _, key := range []string{"properties", "items", "additionalProperties"} {
			if sub, ok := tmpl[key]; ok {
				dropDescriptions(sub)
			}
		}
	}
	out, err := yaml.Marshal(crd)
	if err != nil {
		return err
	}
	out = append([]byte("---\n"), out...)
	if bytes.Equal(in, out) {
		return nil
	}
	return os.WriteFile(path, out, 0o644)
}

func dig(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

func dropDescriptions(v any) {
	switch t := v.(type) {
	case map[string]any:
		if d, ok := t["description"].(string); ok && d != "" {
			if _, isSchema := t["type"]; isSchema || t["properties"] != nil || t["x-kubernetes-preserve-unknown-fields"] != nil {
				delete(t, "description")
			}
		}
		for k, sub := range t {
			if k == "properties" {
				// Property names are keys, not schemas: recurse into each schema.
				if props, ok := sub.(map[string]any); ok {
					for _, p := range props {
						dropDescriptions(p)
					}
				}
				continue
			}
			dropDescriptions(sub)
		}
	case []any:
		for _, e := range t {
			dropDescriptions(e)
		}
	}
}
