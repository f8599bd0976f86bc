// Command sleeper is the workload of Tessera's end-to-end tests, and the
// pause image of their nodes: it prints its environment and the files it is
// given, one line each, then sleeps until SIGTERM (or exits at once with
// -exit, for init containers). The tests read what a container was given
// (NVIDIA_VISIBLE_DEVICES, the Downward API's assignment) from its log.
//
// Output lines:
//
//	env NAME=VALUE
//	file PATH CONTENT   (newlines in CONTENT escaped as \n)
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
)

func main() {
	exit := flag.Bool("exit", false, "exit after printing instead of sleeping")
	flag.Parse()
	env := os.Environ()
	sort.Strings(env)
	for _, e := range env {
		fmt.Printf("env %s\n", e)
	}
	for _, path := range flag.Args() {
		data, err := os.ReadFile(path)
		if err != nil {
			fmt.Printf("file %s ERROR %v\n", path, err)
			continue
		}
		fmt.Printf("file %s %s\n", path, strings.ReplaceAll(string(data), "\n", `\n`))
	}
	if *exit {
		return
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
}
