package fakegpu

import (
	"reflect"
	"strings"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// The go-nvml mocks are moq-generated structs with one XxxFunc field per
// method; calling a method whose field is nil panics. NVML has several
// hundred entry points and a fake machine models a few dozen, so the helpers
// here fill the rest in by reflection instead of by hand:
//
//   - an unmodelled call returns ERROR_NOT_SUPPORTED, which is what a real
//     driver answers for a feature a GPU lacks and what production code
//     already has to handle, instead of crashing a fake-mode binary;
//   - the package-level style (lib.DeviceGetUUID(dev)) delegates to the
//     handle's method (dev.GetUUID()), as the real library does, so code sees
//     the same fake whichever style it uses;
//   - every device call goes through a guard, which is how a lost GPU can
//     answer ERROR_GPU_IS_LOST to all calls without listing them.
//
// Only functions whose last result is an nvml.Return are filled in; the few
// that return a versioned-struct helper instead stay unmodelled, as upstream.

var (
	returnType = reflect.TypeOf(nvml.Return(0))
	nvmlPkg    = returnType.PkgPath()
)

// funcFields calls fn for every settable XxxFunc field of the struct that
// ptr points to.
func funcFields(ptr any, fn func(name string, field reflect.Value)) {
	v := reflect.ValueOf(ptr).Elem()
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() || f.Type.Kind() != reflect.Func || !strings.HasSuffix(f.Name, "Func") {
			continue
		}
		fn(strings.TrimSuffix(f.Name, "Func"), v.Field(i))
	}
}

// endsInReturn reports whether a function type's last result is nvml.Return.
func endsInReturn(ft reflect.Type) bool {
	return ft.NumOut() > 0 && ft.Out(ft.NumOut()-1) == returnType
}

// failWith builds the results of a call of type ft that failed with ret:
// zero values, and ret in every nvml.Return position (some calls, such as
// SetMigMode, return two).
func failWith(ft reflect.Type, ret nvml.Return) []reflect.Value {
	out := make([]reflect.Value, ft.NumOut())
	for i := range out {
		if ft.Out(i) == returnType {
			out[i] = reflect.ValueOf(ret)
		} else {
			out[i] = reflect.Zero(ft.Out(i))
		}
	}
	return out
}

// call invokes fn with args as MakeFunc passed them, spreading the last one
// for a variadic function.
func call(fn reflect.Value, args []reflect.Value) []reflect.Value {
	if fn.Type().IsVariadic() {
		return fn.CallSlice(args)
	}
	return fn.Call(args)
}

// guardFuncs wraps every Return-ending XxxFunc field of the mock struct that
// ptr points to: while fail() returns something other than SUCCESS the call
// fails with it, otherwise the previous implementation runs, or the call
// fails with ERROR_NOT_SUPPORTED if there was none. Call it after the fields
// that the fake models have been set.
func guardFuncs(ptr any, fail func() nvml.Return) {
	funcFields(ptr, func(_ string, field reflect.Value) {
		ft := field.Type()
		if !endsInReturn(ft) {
			return
		}
		orig := reflect.ValueOf(field.Interface())
		field.Set(reflect.MakeFunc(ft, func(args []reflect.Value) []reflect.Value {
			if ret := fail(); ret != nvml.SUCCESS {
				return failWith(ft, ret)
			}
			if orig.IsNil() {
				return failWith(ft, nvml.ERROR_NOT_SUPPORTED)
			}
			return call(orig, args)
		}))
	})
}

// fillUnset gives every nil XxxFunc field of the mock struct that ptr points
// to an implementation: a delegation to the handle's method when the field is
// the package-level form of a handle method (DeviceGetUUID(Device) ->
// Device.GetUUID()), else ERROR_NOT_SUPPORTED when it returns an nvml.Return.
// Fields that are already set are left alone.
func fillUnset(ptr any) {
	funcFields(ptr, func(name string, field reflect.Value) {
		if !field.IsNil() {
			return
		}
		ft := field.Type()
		if method, ok := delegatedMethod(name, ft); ok {
			field.Set(reflect.MakeFunc(ft, func(args []reflect.Value) []reflect.Value {
				if args[0].IsNil() {
					return failWith(ft, nvml.ERROR_INVALID_ARGUMENT)
				}
				return call(args[0].MethodByName(method), args[1:])
			}))
			return
		}
		if endsInReturn(ft) {
			field.Set(reflect.MakeFunc(ft, func([]reflect.Value) []reflect.Value {
				return failWith(ft, nvml.ERROR_NOT_SUPPORTED)
			}))
		}
	})
}

// delegatedMethod reports whether a package-level function such as
// DeviceGetUUID(Device) (string, Return) is the same call as the method
// GetUUID() (string, Return) on its first argument's nvml handle type, and
// returns the method's name.
func delegatedMethod(name string, ft reflect.Type) (string, bool) {
	if ft.NumIn() == 0 {
		return "", false
	}
	recv := ft.In(0)
	if recv.Kind() != reflect.Interface || recv.PkgPath() != nvmlPkg || !strings.HasPrefix(name, recv.Name()) {
		return "", false
	}
	method := strings.TrimPrefix(name, recv.Name())
	m, ok := recv.MethodByName(method)
	if !ok {
		return "", false
	}
	mt := m.Type
	if mt.NumIn() != ft.NumIn()-1 || mt.NumOut() != ft.NumOut() || mt.IsVariadic() != ft.IsVariadic() {
		return "", false
	}
	for i := 0; i < mt.NumIn(); i++ {
		if mt.In(i) != ft.In(i+1) {
			return "", false
		}
	}
	for i := 0; i < mt.NumOut(); i++ {
		if mt.Out(i) != ft.Out(i) {
			return "", false
		}
	}
	return method, true
}
