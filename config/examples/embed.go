// Package examples embeds the example scheduler configurations, so that the
// in-process cluster tests and the demo run the file that users copy.
package examples

import _ "embed" // for go:embed

// TesseraScheduler is tessera-scheduler.yaml: a KubeSchedulerConfiguration
// with the tessera-scheduler profile and every plugin arg at its default.
//
//go:embed tessera-scheduler.yaml
var TesseraScheduler []byte
