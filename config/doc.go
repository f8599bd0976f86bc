// Package config holds the internal (unversioned) form of the arguments of
// Tessera's scheduler framework plugins.
//
// The kube-scheduler reads plugin arguments from the pluginConfig section of a
// KubeSchedulerConfiguration, decodes them as the versioned types in
// config/v1, applies defaults there and converts them into the types of this
// package. Plugins only ever see these internal types: they carry no pointers
// and no "unset" state, so plugin code never has to repeat defaulting logic.
//
// Validation lives in config/validation and the scheme wiring that makes the
// scheduler's config loader aware of these kinds lives in config/scheme; a
// binary must import config/scheme for pluginConfig args to be typed.
package config
