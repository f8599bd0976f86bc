// Package v1 holds the versioned form (kubescheduler.config.k8s.io/v1) of
// the arguments of Tessera's scheduler plugins: the shape users write in the
// pluginConfig section of a KubeSchedulerConfiguration.
//
// Optional fields are pointers so that defaulting can tell "not set" from an
// explicit zero (a weight of 0 switches a score term off, it does not mean
// "use the default"). Defaulting, conversion to and from the internal types
// in package config, and deep copies are hand-written.
package v1
