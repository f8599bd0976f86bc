package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "pods.csv")
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

const podHeader = "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,deletion_time,scheduled_time\n"

func TestReadPodsRejectsBadRows(t *testing.T) {
	for _, tc := range []struct {
		name, rows, want string
	}{
		{"missing columns", "openb-pod-0000,1000,100\n", "pods.csv:2: 3 fields, the header has 11"},
		{"negative value", "openb-pod-0000,-5,100,1,1000,,LS,Running,0,1,0\n", "pods.csv:2: column cpu_milli: -5 is negative"},
		{"non-numeric", "openb-pod-0000,1000,lots,1,1000,,LS,Running,0,1,0\n", `pods.csv:2: column memory_mib: "lots" is not an integer`},
		{"share of several gpus", "ok,1,1,1,500,,,,,,\nbad,1,1,2,500,,,,,,\n", "pods.csv:3: num_gpu 2 with gpu_milli 500"},
		{"gpu milli without gpus", "bad,1,1,0,500,,,,,,\n", "both or neither must be zero"},
		{"more than a gpu", "bad,1,1,1,1500,,,,,,\n", "more than one GPU"},
		{"no rows", "", "no pods"},
		// The reader cannot parse these rows at all; they once crashed the
		// tool, which asked for field positions of a record it never read.
		{"stray quote", "ok,1,1,1,500,,,,,,\n\"bad,1,1,0,0,,,,,,\n", "pods.csv:3: column 20: extraneous or missing \" in quoted-field"},
		{"quote in a field", "ok,1,1,1,500,,,,,,\nb\"ad,1,1,0,0,,,,,,\n", `pods.csv:3: column 2: bare " in non-quoted-field`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := readPods(writeFile(t, podHeader+tc.rows))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
	_, err := readPods(writeFile(t, "name,\"cpu_milli\nx,1\n"))
	if err == nil || !strings.Contains(err.Error(), "pods.csv:1: reading the header: line 2, column 5: extraneous") {
		t.Errorf("unparsable header: %v", err)
	}
	_, err = readPods(writeFile(t, "name,cpu_milli\nx,1\n"))
	if err == nil || !strings.Contains(err.Error(), `pods.csv:1: the header lacks column "memory_mib"`) {
		t.Errorf("missing header column: %v", err)
	}
}

func TestReadPods(t *testing.T) {
	pods, err := readPods(writeFile(t, podHeader+
		"a,4000,100,1,250,,LS,Running,0,1,0\n"+
		"b,8000,200,2,1000,V100M16|V100M32|V100M32,LS,Running,0,1,0\n"+
		"c,1000,50,0,0,,BE,Running,0,1,0\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(pods) != 3 || pods[0].demand() != 250 || pods[1].demand() != 2000 || pods[2].demand() != 0 {
		t.Fatalf("pods %+v", pods)
	}
	if got := strings.Join(pods[1].models, ","); got != "V100M16,V100M32" {
		t.Errorf("models %q, want the duplicate dropped", got)
	}
	// The multigpu lists have no gpu_spec column.
	five, err := readPods(writeFile(t, "name,cpu_milli,memory_mib,num_gpu,gpu_milli\na,1,1,8,1000\n"))
	if err != nil {
		t.Fatalf("five-column list: %v", err)
	}
	if five[0].spec != "" || len(five[0].models) != 0 {
		t.Errorf("a list without gpu_spec gave the pod model constraint %q (%v)", five[0].spec, five[0].models)
	}
}

func TestReadNodesRejectsBadRows(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nodes.csv")
	os.WriteFile(path, []byte("sn,cpu_milli,memory_mib,gpu,model\nn1,96000,1024,8,G2\nn1,96000,1024,8,G2\n"), 0o644)
	if _, err := readNodes(path); err == nil || !strings.Contains(err.Error(), "nodes.csv:3: node n1 appears twice") {
		t.Errorf("duplicate node: %v", err)
	}
	os.WriteFile(path, []byte("sn,cpu_milli,memory_mib,gpu,model\nn1,96000,1024,8,\n"), 0o644)
	if _, err := readNodes(path); err == nil || !strings.Contains(err.Error(), "has 8 GPUs but no model") {
		t.Errorf("no model: %v", err)
	}
}

func TestArrivalsTopUpAndTrim(t *testing.T) {
	var pods []tracePod
	for i := 0; i < 100; i++ {
		pods = append(pods, tracePod{name: string(rune('a'+i%26)) + string(rune('a'+i/26)), numGPU: 1, gpuMilli: 500})
	}
	// 50 GPUs of demand on a 40-GPU cluster: topped up to 52, trimmed to 39.
	up := arrivals(pods, 40000, 1.3, 42)
	down := arrivals(pods, 40000, 0.975, 42)
	sum := func(ps []tracePod) (s int64) {
		for _, p := range ps {
			s += p.demand()
		}
		return s
	}
	if sum(up) != 52000 || sum(down) != 39000 {
		t.Errorf("demand after top-up %d, after trim %d; want 52000 and 39000", sum(up), sum(down))
	}
	again := arrivals(pods, 40000, 1.3, 42)
	for i := range up {
		if up[i].name != again[i].name {
			t.Fatal("the same seed gave another order")
		}
	}
}

func TestOracleClasses(t *testing.T) {
	pods := []tracePod{
		{cpuMilli: 1000, numGPU: 1, gpuMilli: 500}, {cpuMilli: 1000, numGPU: 1, gpuMilli: 500}, {cpuMilli: 1000, numGPU: 1, gpuMilli: 500},
		{cpuMilli: 2000, numGPU: 1, gpuMilli: 1000}, {cpuMilli: 2000, numGPU: 1, gpuMilli: 1000},
		{cpuMilli: 500},
	}
	got := oracleClasses(pods, 0.8)
	if len(got) != 2 || got[0].n != 3 || got[1].key.gpus != 1 || got[1].key.milli != 1000 {
		t.Errorf("classes %+v; want the two most common, covering 5 of 6 pods", got)
	}
}

func TestStrategyByNameListsValid(t *testing.T) {
	_, err := strategyByName("firstfit")
	if err == nil || !strings.Contains(err.Error(), "random, binpack, spread, bestfit, dotprod, fragmentation, fragmentation-fgd, fragmentation-oracle") {
		t.Errorf("error %v", err)
	}
}
