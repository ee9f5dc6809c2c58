package api

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"

	"github.com/arborsh/arbor/client/apitypes"
	"github.com/arborsh/arbor/internal/oplog"
)

// fill sets every field reachable from v (a pointer) to a distinct non-zero
// value, so a field one side lacks or names differently shows in the JSON.
func fill(v reflect.Value, n *int) {
	*n++
	switch v.Kind() {
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(v.Elem(), n)
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			if v.Type().Field(i).IsExported() {
				fill(v.Field(i), n)
			}
		}
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 1, 1))
		fill(v.Index(0), n)
	case reflect.Map:
		v.Set(reflect.MakeMap(v.Type()))
		k, e := reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem()
		fill(k, n)
		fill(e, n)
		v.SetMapIndex(k, e)
	case reflect.String:
		v.SetString("s" + string(rune('a'+*n%26)))
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int64:
		v.SetInt(int64(*n))
	case reflect.Uint32:
		v.SetUint(uint64(0o4000 + *n%0o1000)) // a setuid mode: 4 digits without a leading zero
	case reflect.Float64:
		v.SetFloat(float64(*n) + 0.5)
	default:
		panic("fill: add kind " + v.Kind().String())
	}
}

// TestRecordMatchesWire: every record the engine keeps (internal/oplog) has
// the JSON of its wire twin in client/apitypes, both ways and field by
// field, so rewire and the operations served from stored metadata lose
// nothing. It fails when a field is added to one side only.
func TestRecordMatchesWire(t *testing.T) {
	pairs := []struct{ record, wire any }{
		{&oplog.EventDataInit{}, &apitypes.EventDataInit{}},
		{&oplog.EventDataNetwork{}, &apitypes.EventDataNetwork{}},
		{&oplog.EventDataSpawn{}, &apitypes.EventDataSpawn{}},
		{&oplog.EventDataStream{}, &apitypes.EventDataStream{}},
		{&oplog.EventDataTruncated{}, &apitypes.EventDataTruncated{}},
		{&oplog.EventDataSizeCap{}, &apitypes.EventDataSizeCap{}},
		{&oplog.EventDataExit{}, &apitypes.EventDataExit{}},
		{&oplog.EventDataShutdown{}, &apitypes.EventDataShutdown{}},
		{&oplog.EventDataCompletion{}, &apitypes.EventDataCompletion{}},
		{&oplog.EventDataProgress{}, &apitypes.EventDataProgress{}},
		{&oplog.InstanceMetadata{}, &apitypes.InstanceMetadata{}},
		{&oplog.InstanceResult{}, &apitypes.InstanceResult{}},
		{&oplog.ImageImportMetadata{}, &apitypes.ImageImportMetadata{}},
	}
	for _, p := range pairs {
		for _, dir := range [][2]any{{p.record, p.wire}, {p.wire, p.record}} {
			from, to := dir[0], dir[1]
			n := 0
			fill(reflect.ValueOf(from).Elem(), &n)
			a, err := json.Marshal(from)
			if err != nil {
				t.Fatal(err)
			}
			dec := json.NewDecoder(bytes.NewReader(a))
			dec.DisallowUnknownFields()
			if err := dec.Decode(to); err != nil {
				t.Errorf("%T → %T: %v", from, to, err)
				continue
			}
			b, _ := json.Marshal(to)
			if !bytes.Equal(a, b) {
				t.Errorf("%T → %T changes the JSON:\n%s\n%s", from, to, a, b)
			}
		}
	}
	consts := [][2]string{
		{oplog.StatusPending, apitypes.StatusPending}, {oplog.StatusAssigned, apitypes.StatusAssigned},
		{oplog.StatusExecuting, apitypes.StatusExecuting}, {oplog.StatusSuccess, apitypes.StatusSuccess},
		{oplog.StatusFailed, apitypes.StatusFailed}, {oplog.StatusCancelled, apitypes.StatusCancelled},
		{oplog.KindInstance, apitypes.KindInstance}, {oplog.KindImageImport, apitypes.KindImageImport},
		{oplog.EventInit, apitypes.EventInit}, {oplog.EventNetwork, apitypes.EventNetwork}, {oplog.EventSpawn, apitypes.EventSpawn},
		{oplog.EventStdin, apitypes.EventStdin}, {oplog.EventStdout, apitypes.EventStdout}, {oplog.EventStderr, apitypes.EventStderr},
		{oplog.EventTruncated, apitypes.EventTruncated}, {oplog.EventSizeCap, apitypes.EventSizeCap}, {oplog.EventExit, apitypes.EventExit},
		{oplog.EventShutdown, apitypes.EventShutdown}, {oplog.EventCompletion, apitypes.EventCompletion}, {oplog.EventProgress, apitypes.EventProgress},
	}
	for _, c := range consts {
		if c[0] != c[1] {
			t.Errorf("record constant %q, wire %q", c[0], c[1])
		}
	}
}

// TestSpawnRequestConverts: every field of the wire's spawn, exec and
// import requests reaches the engine's request (a field added to the wire
// and not converted is dropped silently otherwise).
func TestSpawnRequestConverts(t *testing.T) {
	for _, c := range []struct {
		wire any
		conv func(any) any
	}{
		{&apitypes.InstanceSpawnRequest{}, func(w any) any { return spawnRequest(*w.(*apitypes.InstanceSpawnRequest)) }},
		{&apitypes.ExecSpec{}, func(w any) any { return execRequest(*w.(*apitypes.ExecSpec)) }},
		{&apitypes.ImageImportRequest{}, func(w any) any { return importRequest(*w.(*apitypes.ImageImportRequest)) }},
	} {
		n := 0
		fill(reflect.ValueOf(c.wire).Elem(), &n)
		got := reflect.ValueOf(c.conv(c.wire))
		var zero []string
		var walk func(v reflect.Value, path string)
		walk = func(v reflect.Value, path string) {
			switch v.Kind() {
			case reflect.Pointer:
				if v.IsNil() {
					zero = append(zero, path)
					return
				}
				walk(v.Elem(), path)
			case reflect.Struct:
				for i := 0; i < v.NumField(); i++ {
					walk(v.Field(i), path+"."+v.Type().Field(i).Name)
				}
			default:
				if v.IsZero() {
					zero = append(zero, path)
				}
			}
		}
		walk(got, got.Type().Name())
		if len(zero) > 0 {
			t.Errorf("%T → %s leaves %v unset", c.wire, got.Type(), zero)
		}
	}
}
