package main

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"time"

	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"

	gpuinformers "github.com/tessera-gpu/tessera/pkg/generated/informers"
	"github.com/tessera-gpu/tessera/pkg/report"
)

// settle is how long --watch waits after a change for the changes that
// come with it (a pod bound, then its assignment corrected) before it
// takes a new snapshot.
const settle = 300 * time.Millisecond

// follow prints what changes after the first listing, as kubectl get
// --watch does: for tables, the rows that are new or changed, without
// headers; for json, yaml and templates, the whole object again when it
// changed. It runs until ctx ends.
func (o *viewOptions) follow(ctx context.Context, c *clients, ro report.Options, printer snapshotPrinter, last *report.Snapshot) error {
	changed := make(chan struct{}, 1)
	poke := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { signal(changed) },
		UpdateFunc: func(any, any) { signal(changed) },
		DeleteFunc: func(any) { signal(changed) },
	}
	kube := informers.NewSharedInformerFactory(c.kube, 0)
	gpus := gpuinformers.NewSharedInformerFactory(c.gpus, 0)
	if _, err := kube.Core().V1().Pods().Informer().AddEventHandler(poke); err != nil {
		return err
	}
	if _, err := gpus.Tessera().V1alpha1().GPUNodes().Informer().AddEventHandler(poke); err != nil {
		return err
	}
	kube.Start(ctx.Done())
	gpus.Start(ctx.Done())
	defer kube.Shutdown()
	defer gpus.Shutdown()

	rowsOnly := *o.out
	rowsOnly.noHeaders = true
	quiet, err := rowsOnly.printer(o.view)
	if err != nil {
		return err
	}
	prev := render(quiet, last, o.shape(last))
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		}
		// Let the changes that come together arrive together.
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(settle):
		}
		drain(changed)
		snap, err := o.take(ctx, c, ro)
		if err != nil {
			if errors.Is(err, context.Canceled) {
				return nil
			}
			return errors.New(describeAPIError(err, c.cfg))
		}
		out := render(quiet, snap, o.shape(snap))
		if printer.table() {
			seen := map[string]bool{}
			for _, l := range strings.Split(prev, "\n") {
				seen[l] = true
			}
			for _, l := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
				if !seen[l] && strings.TrimSpace(l) != "" {
					if _, err := o.streams.Out.Write([]byte(l + "\n")); err != nil {
						return err
					}
				}
			}
		} else if out != prev {
			if _, err := o.streams.Out.Write([]byte(out)); err != nil {
				return err
			}
		}
		prev = out
	}
}

// render prints a snapshot into a string.
func render(p snapshotPrinter, snap *report.Snapshot, s shape) string {
	var b bytes.Buffer
	_ = p.print(&b, snap, s)
	return b.String()
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

func drain(c chan struct{}) {
	select {
	case <-c:
	default:
	}
}
