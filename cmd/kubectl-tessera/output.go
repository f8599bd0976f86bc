package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/printers"
	"k8s.io/kubectl/pkg/cmd/get"

	"github.com/tessera-gpu/tessera/pkg/report"
)

// reportAPIVersion and the kinds below name the objects -o json, yaml,
// jsonpath, go-template and custom-columns print. They exist only on the
// client: there is nothing to `kubectl get`.
const (
	reportAPIVersion = "report.tessera.io/v1alpha1"
	kindReport       = "GPUReport"
	kindGPU          = "GPU"
	kindNodeSummary  = "GPUNodeSummary"
	kindPending      = "PendingPod"
)

// shape is how the GPU section is laid out.
type shape int

const (
	// shapeGPUs: one row per GPU.
	shapeGPUs shape = iota
	// shapeSummary: one row per node.
	shapeSummary
)

// outputFlags are kubectl's output flags: -o, --no-headers, --template.
type outputFlags struct {
	format    string
	noHeaders bool
	jsonYaml  *genericclioptions.JSONYamlPrintFlags
	template  *genericclioptions.KubeTemplatePrintFlags
	columns   *get.CustomColumnsPrintFlags
}

func newOutputFlags() *outputFlags {
	return &outputFlags{jsonYaml: genericclioptions.NewJSONYamlPrintFlags(), template: genericclioptions.NewKubeTemplatePrintFlags(),
		columns: get.NewCustomColumnsPrintFlags()}
}

func (f *outputFlags) allowed() []string {
	out := append([]string{"wide"}, f.jsonYaml.AllowedFormats()...)
	out = append(out, f.template.AllowedFormats()...)
	return append(out, f.columns.AllowedFormats()...)
}

func (f *outputFlags) addFlags(cmd *cobra.Command) {
	cmd.Flags().StringVarP(&f.format, "output", "o", "", "Output format. One of: ("+strings.Join(f.allowed(), ", ")+").")
	cmd.Flags().BoolVar(&f.noHeaders, "no-headers", false, "When using the default, wide or custom-columns output, don't print headers.")
	f.template.AddFlags(cmd)
	_ = cmd.RegisterFlagCompletionFunc("output", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return f.allowed(), cobra.ShellCompDirectiveNoFileComp
	})
}

func (f *outputFlags) isTable() bool { return f.format == "" || f.format == "wide" }

// snapshotPrinter writes a snapshot in one format.
type snapshotPrinter interface {
	print(w io.Writer, snap *report.Snapshot, s shape) error
	// table reports whether the output is for people (tables), not scripts.
	table() bool
}

// printer picks the printer for -o, or says which formats exist.
func (f *outputFlags) printer(v view) (snapshotPrinter, error) {
	if f.isTable() {
		return tablePrinter{opts: report.PrintOptions{Wide: f.format == "wide", NoHeaders: f.noHeaders}}, nil
	}
	if strings.HasPrefix(f.format, "custom-columns") {
		f.columns.NoHeaders = f.noHeaders
		p, err := f.columns.ToPrinter(f.format)
		if err != nil {
			return nil, usageError{err}
		}
		return itemPrinter{p: p, view: v}, nil
	}
	p, err := f.jsonYaml.ToPrinter(f.format)
	if genericclioptions.IsNoCompatiblePrinterError(err) {
		p, err = f.template.ToPrinter(f.format)
	}
	if genericclioptions.IsNoCompatiblePrinterError(err) {
		return nil, usageError{fmt.Errorf("unknown output format %q; use one of: %s", f.format, strings.Join(f.allowed(), ", "))}
	}
	if err != nil {
		return nil, usageError{err}
	}
	return objectPrinter{p: p, view: v}, nil
}

// tablePrinter writes the tables people read.
type tablePrinter struct{ opts report.PrintOptions }

func (t tablePrinter) table() bool { return true }

func (t tablePrinter) print(w io.Writer, snap *report.Snapshot, s shape) error {
	if s == shapeSummary {
		snap.WriteSummary(w, t.opts)
	} else {
		snap.WriteTables(w, t.opts)
	}
	return nil
}

// objectPrinter writes the whole snapshot as one GPUReport object, for
// json, yaml, jsonpath and go-template. Its fields do not depend on the size
// of the cluster: the summary command gives summaries, the others nodes.
type objectPrinter struct {
	p    printers.ResourcePrinter
	view view
}

func (o objectPrinter) table() bool { return false }

func (o objectPrinter) print(w io.Writer, snap *report.Snapshot, _ shape) error {
	obj := map[string]any{"apiVersion": reportAPIVersion, "kind": kindReport}
	if o.view == viewSummary {
		obj["summaries"] = snap.Summaries()
	} else if snap.Nodes != nil {
		obj["nodes"] = snap.Nodes
	}
	if snap.Pending != nil {
		obj["pending"] = snap.Pending
	}
	if len(snap.Missing) > 0 {
		obj["missing"] = snap.Missing
	}
	u, err := toUnstructured(obj)
	if err != nil {
		return err
	}
	return o.p.PrintObj(u, w)
}

// itemPrinter writes one row per item for custom-columns: GPUs, node
// summaries, or pending pods.
type itemPrinter struct {
	p    printers.ResourcePrinter
	view view
}

func (i itemPrinter) table() bool { return true }

func (i itemPrinter) print(w io.Writer, snap *report.Snapshot, s shape) error {
	list := &unstructured.UnstructuredList{Object: map[string]any{"apiVersion": reportAPIVersion, "kind": "List"}}
	add := func(kind string, item any) error {
		u, err := toUnstructured(item)
		if err != nil {
			return err
		}
		u.SetAPIVersion(reportAPIVersion)
		u.SetKind(kind)
		list.Items = append(list.Items, *u)
		return nil
	}
	var err error
	switch {
	case i.view == viewPending:
		for _, p := range snap.Pending {
			if err = add(kindPending, p); err != nil {
				return err
			}
		}
	case s == shapeSummary:
		for _, n := range snap.Summaries() {
			if err = add(kindNodeSummary, n); err != nil {
				return err
			}
		}
	default:
		for _, g := range snap.GPUItems() {
			if err = add(kindGPU, g); err != nil {
				return err
			}
		}
	}
	return i.p.PrintObj(list, w)
}

// toUnstructured turns a JSON-tagged value into an unstructured object.
func toUnstructured(v any) (*unstructured.Unstructured, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	m := map[string]any{}
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	return &unstructured.Unstructured{Object: m}, nil
}
