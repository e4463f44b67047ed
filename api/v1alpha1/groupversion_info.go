// Package v1alpha1 holds agentry's custom resources, group agentry.dev,
// version v1alpha1: AgentPool (a pool of ephemeral agents kept in step with a
// server's job queue) and Agent (one ephemeral agent and its pod).
//
// +kubebuilder:object:generate=true
// +groupName=agentry.dev
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version of agentry's resources.
	GroupVersion = schema.GroupVersion{Group: "agentry.dev", Version: "v1alpha1"}

	// SchemeBuilder registers the types of this group version.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the types of this group version to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
