package fakegpu_test

import (
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/google/go-cmp/cmp"

	"github.com/tessera-gpu/tessera/deviceplugin/fakegpu"
)

func newMachine(t *testing.T, kind string) *fakegpu.Machine {
	t.Helper()
	m, err := fakegpu.New(kind, "node-a")
	if err != nil {
		t.Fatalf("New(%q): %v", kind, err)
	}
	return m
}

func handle(t *testing.T, m *fakegpu.Machine, i int) nvml.Device {
	t.Helper()
	d, ret := m.DeviceGetHandleByIndex(i)
	if ret != nvml.SUCCESS {
		t.Fatalf("DeviceGetHandleByIndex(%d): %v", i, ret)
	}
	return d
}

func TestKinds(t *testing.T) {
	want := []string{"dgxa100", "dgxb200", "dgxh100", "dgxh200", "mixed"}
	if diff := cmp.Diff(want, fakegpu.Kinds()); diff != "" {
		t.Errorf("Kinds() (-want +got):\n%s", diff)
	}
	for _, k := range want {
		m := newMachine(t, k)
		if m.Kind() != k || m.NodeName() != "node-a" {
			t.Errorf("kind/node = %q/%q", m.Kind(), m.NodeName())
		}
		var _ nvml.Interface = m
	}
}

func TestNewErrors(t *testing.T) {
	_, err := fakegpu.New("dgx-a100", "node-a")
	if err == nil {
		t.Fatal("unknown kind accepted")
	}
	for _, k := range fakegpu.Kinds() {
		if !strings.Contains(err.Error(), k) {
			t.Errorf("error %q does not list valid kind %q", err, k)
		}
	}
	if !strings.Contains(err.Error(), `"dgx-a100"`) {
		t.Errorf("error %q does not name the bad kind", err)
	}
	if _, err := fakegpu.New("dgxa100", ""); err == nil {
		t.Error("empty node name accepted")
	}
}

func TestPCI(t *testing.T) {
	m := newMachine(t, "dgxh100")
	d := handle(t, m, 5)
	p, ret := d.GetPciInfo()
	if ret != nvml.SUCCESS {
		t.Fatal(ret)
	}
	if got := cString(p.BusId[:]); got != "00000000:AB:00.0" {
		t.Errorf("BusId = %q", got)
	}
	if got := cString(p.BusIdLegacy[:]); got != "0000:AB:00.0" {
		t.Errorf("BusIdLegacy = %q", got)
	}
	if p.Bus != 0xab || p.PciDeviceId == 0 {
		t.Errorf("PciInfo = %+v", p)
	}
	for _, id := range []string{"00000000:AB:00.0", "0000:ab:00.0", "00000000:ab:00.0"} {
		got, ret := m.DeviceGetHandleByPciBusId(id)
		if ret != nvml.SUCCESS || got != d {
			t.Errorf("DeviceGetHandleByPciBusId(%q) = %v, %v", id, got, ret)
		}
	}
	if _, ret := m.DeviceGetHandleByPciBusId("0000:01:00.0"); ret != nvml.ERROR_NOT_FOUND {
		t.Errorf("unknown bus id: %v", ret)
	}
	if _, ret := m.DeviceGetHandleByPciBusId("garbage"); ret != nvml.ERROR_INVALID_ARGUMENT {
		t.Errorf("malformed bus id: %v", ret)
	}
}

func cString(b []int8) string {
	var sb strings.Builder
	for _, c := range b {
		if c == 0 {
			break
		}
		sb.WriteByte(byte(c))
	}
	return sb.String()
}

func TestNVLink(t *testing.T) {
	m := newMachine(t, "mixed")
	// A30 (index 2): links present but down, then past the last link.
	a30 := handle(t, m, 2)
	for l := 0; l < 4; l++ {
		if s, ret := a30.GetNvLinkState(l); ret != nvml.SUCCESS || s != nvml.FEATURE_DISABLED {
			t.Errorf("A30 link %d = %v, %v", l, s, ret)
		}
	}
	if _, ret := a30.GetNvLinkState(4); ret != nvml.ERROR_INVALID_ARGUMENT {
		t.Errorf("A30 link 4: %v", ret)
	}
	// A100 pair 3-4: every link of 3 ends at 4.
	a100 := handle(t, m, 3)
	p4, _ := handle(t, m, 4).GetPciInfo()
	for l := 0; l < 12; l++ {
		s, ret := a100.GetNvLinkState(l)
		if ret != nvml.SUCCESS || s != nvml.FEATURE_ENABLED {
			t.Fatalf("A100 link %d = %v, %v", l, s, ret)
		}
		r, ret := a100.GetNvLinkRemotePciInfo(l)
		if ret != nvml.SUCCESS || r.BusId != p4.BusId {
			t.Errorf("A100 link %d remote = %q, %v", l, cString(r.BusId[:]), ret)
		}
	}
	// The same through the package-level call style.
	if s, ret := m.DeviceGetNvLinkState(a100, 0); ret != nvml.SUCCESS || s != nvml.FEATURE_ENABLED {
		t.Errorf("DeviceGetNvLinkState = %v, %v", s, ret)
	}
}

func TestLostGPU(t *testing.T) {
	m := newMachine(t, "dgxa100")
	uuid := m.UUIDs()[4]
	d := handle(t, m, 4)
	if err := m.LoseGPU(uuid); err != nil {
		t.Fatal(err)
	}
	checks := map[string]nvml.Return{}
	_, checks["GetUUID"] = d.GetUUID()
	_, checks["GetName"] = d.GetName()
	_, checks["GetMemoryInfo"] = d.GetMemoryInfo()
	_, checks["GetNumaNodeId"] = d.GetNumaNodeId()
	_, checks["GetPowerUsage (unmodelled)"] = d.GetPowerUsage()
	checks["RegisterEvents"] = d.RegisterEvents(nvml.EventTypeXidCriticalError, nil)
	r1, r2 := d.SetMigMode(1)
	checks["SetMigMode[0]"], checks["SetMigMode[1]"] = r1, r2
	_, checks["lib.DeviceGetUUID"] = m.DeviceGetUUID(d)
	_, checks["DeviceGetHandleByUUID"] = m.DeviceGetHandleByUUID(uuid)
	_, checks["DeviceGetHandleByIndex"] = m.DeviceGetHandleByIndex(4)
	_, checks["DeviceGetHandleByPciBusId"] = m.DeviceGetHandleByPciBusId("0000:87:00.0")
	for call, ret := range checks {
		if ret != nvml.ERROR_GPU_IS_LOST {
			t.Errorf("%s on a lost GPU = %v, want ERROR_GPU_IS_LOST", call, ret)
		}
	}
	if _, ret := handle(t, m, 3).GetUUID(); ret != nvml.SUCCESS {
		t.Errorf("another GPU is affected: %v", ret)
	}

	if err := m.RestoreGPU(uuid); err != nil {
		t.Fatal(err)
	}
	if got, ret := d.GetUUID(); ret != nvml.SUCCESS || got != uuid {
		t.Errorf("after restore: %q, %v", got, ret)
	}
	if err := m.LoseGPU("GPU-nope"); err == nil {
		t.Error("LoseGPU of an unknown UUID succeeded")
	}
}

func TestUnmodelledCallsDoNotPanic(t *testing.T) {
	m := newMachine(t, "dgxh200")
	d := handle(t, m, 0)
	if _, ret := d.GetTemperature(nvml.TEMPERATURE_GPU); ret != nvml.ERROR_NOT_SUPPORTED {
		t.Errorf("GetTemperature = %v", ret)
	}
	if _, ret := m.DeviceGetPowerUsage(d); ret != nvml.ERROR_NOT_SUPPORTED {
		t.Errorf("DeviceGetPowerUsage = %v", ret)
	}
	if _, ret := m.SystemGetProcessName(1); ret != nvml.ERROR_NOT_SUPPORTED {
		t.Errorf("SystemGetProcessName = %v", ret)
	}
	if _, ret := m.DeviceGetUUID(nil); ret != nvml.ERROR_INVALID_ARGUMENT {
		t.Errorf("DeviceGetUUID(nil) = %v", ret)
	}
	if s := m.ErrorString(nvml.ERROR_GPU_IS_LOST); s != "ERROR_GPU_IS_LOST" {
		t.Errorf("ErrorString = %q", s)
	}
	// Modelled upstream behaviour survives the layering.
	if mode, _, ret := d.GetMigMode(); ret != nvml.SUCCESS || mode != 0 {
		t.Errorf("GetMigMode = %v, %v", mode, ret)
	}
}

func newSet(t *testing.T, m *fakegpu.Machine, devs ...nvml.Device) nvml.EventSet {
	t.Helper()
	s, ret := m.EventSetCreate()
	if ret != nvml.SUCCESS {
		t.Fatal(ret)
	}
	for _, d := range devs {
		if ret := d.RegisterEvents(nvml.EventTypeXidCriticalError|nvml.EventTypeDoubleBitEccError, s); ret != nvml.SUCCESS {
			t.Fatal(ret)
		}
	}
	return s
}

func TestEvents(t *testing.T) {
	m := newMachine(t, "dgxb200")
	uuids := m.UUIDs()
	d0, d1 := handle(t, m, 0), handle(t, m, 1)

	// Injected before anyone listens: held until registration.
	if err := m.InjectXID(uuids[0], 79); err != nil {
		t.Fatal(err)
	}
	s := newSet(t, m, d0)
	ev, ret := s.Wait(100)
	if ret != nvml.SUCCESS || ev.Device != d0 || ev.EventType != nvml.EventTypeXidCriticalError || ev.EventData != 79 {
		t.Fatalf("Wait = %+v, %v", ev, ret)
	}
	if _, ret := s.Wait(10); ret != nvml.ERROR_TIMEOUT {
		t.Errorf("empty Wait = %v, want timeout", ret)
	}
	if _, ret := s.Wait(0); ret != nvml.ERROR_TIMEOUT {
		t.Errorf("Wait(0) = %v, want timeout", ret)
	}

	// An event for a GPU the set did not register does not reach it.
	if err := m.InjectDoubleBitECC(uuids[1]); err != nil {
		t.Fatal(err)
	}
	if _, ret := s.Wait(10); ret != nvml.ERROR_TIMEOUT {
		t.Errorf("unregistered GPU's event delivered: %v", ret)
	}
	if ret := d1.RegisterEvents(nvml.EventTypeDoubleBitEccError, s); ret != nvml.SUCCESS {
		t.Fatal(ret)
	}
	if ev, ret := s.Wait(100); ret != nvml.SUCCESS || ev.Device != d1 || ev.EventType != nvml.EventTypeDoubleBitEccError {
		t.Errorf("held ECC event = %+v, %v", ev, ret)
	}

	// Armed failures come first and wake a blocked Wait.
	go func() {
		time.Sleep(20 * time.Millisecond)
		m.FailWait(nvml.ERROR_UNKNOWN, 2)
	}()
	begin := time.Now()
	if _, ret := s.Wait(5000); ret != nvml.ERROR_UNKNOWN {
		t.Errorf("Wait = %v, want the armed failure", ret)
	}
	if time.Since(begin) > 2*time.Second {
		t.Errorf("FailWait did not wake the blocked Wait")
	}
	if err := m.InjectXID(uuids[0], 48); err != nil {
		t.Fatal(err)
	}
	if _, ret := s.Wait(10); ret != nvml.ERROR_UNKNOWN {
		t.Errorf("second armed failure = %v", ret)
	}

	// Freeing a set hands its undelivered event to the next listener.
	if ret := s.Free(); ret != nvml.SUCCESS {
		t.Fatal(ret)
	}
	if _, ret := s.Wait(10); ret != nvml.ERROR_UNINITIALIZED {
		t.Errorf("Wait on a freed set = %v", ret)
	}
	if ret := s.Free(); ret == nvml.SUCCESS {
		t.Error("double Free succeeded")
	}
	s2 := newSet(t, m, d0)
	if ev, ret := s2.Wait(100); ret != nvml.SUCCESS || ev.EventData != 48 {
		t.Errorf("re-homed event = %+v, %v", ev, ret)
	}

	// Broadcast events reach every set, registered or not.
	s3 := newSet(t, m)
	m.InjectEvent(nvml.EventData{EventType: nvml.EventTypeXidCriticalError, EventData: 62})
	for i, set := range []nvml.EventSet{s2, s3} {
		if ev, ret := set.Wait(100); ret != nvml.SUCCESS || ev.Device != nil || ev.EventData != 62 {
			t.Errorf("set %d broadcast = %+v, %v", i, ev, ret)
		}
	}

	// Registration errors.
	if ret := d0.RegisterEvents(nvml.EventTypeXidCriticalError, &mock.EventSet{}); ret != nvml.ERROR_INVALID_ARGUMENT {
		t.Errorf("RegisterEvents on a foreign set = %v", ret)
	}
	if ret := d0.RegisterEvents(nvml.EventTypePState, s2); ret != nvml.ERROR_NOT_SUPPORTED {
		t.Errorf("RegisterEvents of an unsupported type = %v", ret)
	}
	if err := m.InjectXID("GPU-nope", 79); err == nil {
		t.Error("InjectXID on an unknown UUID succeeded")
	}
	// The package-level call style reaches the same set.
	m.InjectEvent(nvml.EventData{EventType: nvml.EventTypeXidCriticalError, EventData: 63})
	if ev, ret := m.EventSetWait(s3, 100); ret != nvml.SUCCESS || ev.EventData != 63 {
		t.Errorf("EventSetWait = %+v, %v", ev, ret)
	}
}

// Injection, failure arming and lost/restore from many goroutines while
// others wait and query: run with -race. Every injected event must arrive
// exactly once.
func TestConcurrentInjectionAndWait(t *testing.T) {
	m := newMachine(t, "dgxh100")
	uuids := m.UUIDs()
	var devs []nvml.Device
	for i := range uuids {
		devs = append(devs, handle(t, m, i))
	}
	set := newSet(t, m, devs...)

	const injectors, perInjector = 4, 200
	want := injectors * perInjector
	var received atomic.Int64
	done := make(chan struct{})

	var waiters sync.WaitGroup
	waiters.Add(1)
	go func() {
		defer waiters.Done()
		for received.Load() < int64(want) {
			select {
			case <-done:
				return
			default:
			}
			if _, ret := set.Wait(5); ret == nvml.SUCCESS {
				received.Add(1)
			}
		}
	}()

	var workers sync.WaitGroup
	for w := 0; w < injectors; w++ {
		workers.Add(1)
		go func(w int) {
			defer workers.Done()
			for i := 0; i < perInjector; i++ {
				u := uuids[(w+i)%len(uuids)]
				var err error
				if i%2 == 0 {
					err = m.InjectXID(u, 79)
				} else {
					err = m.InjectDoubleBitECC(u)
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		}(w)
	}
	workers.Add(2)
	go func() {
		defer workers.Done()
		for i := 0; i < 50; i++ {
			m.FailWait(nvml.ERROR_UNKNOWN, 1)
			u := uuids[i%len(uuids)]
			_ = m.LoseGPU(u)
			_, _ = m.DeviceGetHandleByUUID(u)
			_ = m.RestoreGPU(u)
		}
	}()
	go func() {
		defer workers.Done()
		for i := 0; i < 500; i++ {
			d := devs[i%len(devs)]
			_, _ = d.GetMemoryInfo()
			_, _ = d.GetNvLinkState(i % 20)
			_ = m.UUIDs()
		}
	}()
	workers.Wait()

	deadline := time.After(10 * time.Second)
	for received.Load() < int64(want) {
		select {
		case <-deadline:
			close(done)
			waiters.Wait()
			t.Fatalf("received %d of %d events", received.Load(), want)
		case <-time.After(5 * time.Millisecond):
		}
	}
	close(done)
	waiters.Wait()
	m.FailWait(nvml.SUCCESS, 0) // an armed failure may be left over
	if _, ret := set.Wait(10); ret != nvml.ERROR_TIMEOUT {
		t.Errorf("extra event or failure after all were received: %v", ret)
	}
}
