// Command tessera-scheduler is kube-scheduler with Tessera's GPU plugins
// compiled in. Deploy it as a second scheduler; pods opt in with
// spec.schedulerName: tessera-scheduler. It takes every kube-scheduler flag.
package main

import (
	"fmt"
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-scheduler/app"

	"github.com/tessera-gpu/tessera/pkg/schedulerapp"
	"github.com/tessera-gpu/tessera/pkg/version"
)

func main() {
	// kube-scheduler's own --version names Kubernetes, not this binary.
	for _, a := range os.Args[1:] {
		if a == "--version" || a == "--version=true" || a == "-version" {
			fmt.Println(version.String("tessera-scheduler"))
			return
		}
	}
	cmd := app.NewSchedulerCommand(schedulerapp.Options()...)
	cmd.Use = "tessera-scheduler"
	os.Exit(cli.Run(cmd))
}
