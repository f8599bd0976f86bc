package localcluster

import (
	"fmt"
	"os"
	"sync"

	"k8s.io/kubernetes/test/utils/ktesting"
)

// fatal is the panic value processTB uses to unwind on Fatal.
type fatal struct{ msg string }

// processTB lets the apiserver test server, which wants a test handle, run
// inside an ordinary program such as the demo: logs go to a function,
// cleanups run on Stop, and Fatal unwinds to Start as an error.
type processTB struct {
	mu       sync.Mutex
	name     string
	dir      string
	logf     func(string, ...any)
	cleanups []func()
	failed   bool
}

var _ ktesting.TB = &processTB{}

func (p *processTB) Attr(string, string) {}
func (p *processTB) Chdir(dir string) {
	if err := os.Chdir(dir); err != nil {
		p.Fatalf("chdir %s: %v", dir, err)
	}
}
func (p *processTB) Cleanup(f func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cleanups = append(p.cleanups, f)
}
func (p *processTB) Error(args ...any) { p.fail(fmt.Sprint(args...)) }
func (p *processTB) Errorf(format string, args ...any) {
	p.fail(fmt.Sprintf(format, args...))
}
func (p *processTB) Fail() { p.fail("failed") }
func (p *processTB) FailNow() {
	p.fail("failed")
	panic(fatal{"failed"})
}
func (p *processTB) Failed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.failed
}
func (p *processTB) Fatal(args ...any) {
	msg := fmt.Sprint(args...)
	p.fail(msg)
	panic(fatal{msg})
}
func (p *processTB) Fatalf(format string, args ...any) { p.Fatal(fmt.Sprintf(format, args...)) }
func (p *processTB) Helper()                           {}
func (p *processTB) Log(args ...any)                   { p.logf("%s", fmt.Sprint(args...)) }
func (p *processTB) Logf(format string, args ...any)   { p.logf(format, args...) }
func (p *processTB) Name() string                      { return p.name }
func (p *processTB) Setenv(key, value string) {
	if err := os.Setenv(key, value); err != nil {
		p.Fatalf("setenv %s: %v", key, err)
	}
}
func (p *processTB) Skip(args ...any)                 { p.Fatal(args...) }
func (p *processTB) Skipf(format string, args ...any) { p.Fatalf(format, args...) }
func (p *processTB) SkipNow()                         { p.Fatal("skipped") }
func (p *processTB) Skipped() bool                    { return false }
func (p *processTB) TempDir() string {
	d, err := os.MkdirTemp(p.dir, "tmp")
	if err != nil {
		p.Fatalf("temp dir: %v", err)
	}
	return d
}

func (p *processTB) fail(msg string) {
	p.mu.Lock()
	p.failed = true
	p.mu.Unlock()
	p.logf("error: %s", msg)
}

// runCleanups runs the registered cleanups, last first.
func (p *processTB) runCleanups() {
	p.mu.Lock()
	cs := p.cleanups
	p.cleanups = nil
	p.mu.Unlock()
	for i := len(cs) - 1; i >= 0; i-- {
		cs[i]()
	}
}
