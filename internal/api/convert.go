package api

import (
	"encoding/json"
	"fmt"

	"github.com/arborsh/arbor/client/apitypes"
	"github.com/arborsh/arbor/internal/engine"
	"github.com/arborsh/arbor/internal/oplog"
)

// Conversions between the wire (client/apitypes) and the engine's requests
// and records (internal/engine, internal/oplog). The wire's shape (JSON,
// field types) is checked when decoding; the engine checks the rest.

func spawnRequest(w apitypes.InstanceSpawnRequest) engine.SpawnRequest {
	r := engine.SpawnRequest{Command: w.Command, Image: w.Image, Disposable: w.Disposable, Hostname: w.Hostname, Args: w.Args,
		Shell: w.Shell, Env: w.Env, PreserveEnv: w.PreserveEnv, Cwd: w.Cwd, UID: w.UID, GID: w.GID, Stdin: stdin(w.Stdin),
		Timeout: w.Timeout, TruncateOutputAt: w.TruncateOutputAt, Runtime: w.Runtime, ResultTag: w.ResultTag}
	if l := w.ResourcesLimits; l != nil {
		r.ResourcesLimits = &oplog.ResourcesLimits{MaxLayerBytes: l.MaxLayerBytes, MemoryBytes: l.MemoryBytes, Pids: l.Pids, CPUs: l.CPUs}
	}
	if w.Networking != nil {
		r.Networking = &engine.Networking{Enabled: w.Networking.Enabled}
		if eg := w.Networking.Egress; eg != nil {
			r.Networking.Egress = &engine.Egress{Allow: eg.Allow, Deny: eg.Deny}
		}
	}
	if w.Files != nil {
		r.Files = make(map[string]oplog.FileSpec, len(w.Files))
		for dst, f := range w.Files {
			r.Files[dst] = oplog.FileSpec{UUID: f.UUID, Mode: oplog.FileMode(f.Mode), UID: f.UID, GID: f.GID}
		}
	}
	return r
}

func stdin(w *apitypes.ClosableStreamRepr) *engine.Stdin {
	if w == nil {
		return nil
	}
	return &engine.Stdin{Value: w.Value, Encoding: w.Encoding, Close: w.Close}
}

func execRequest(w apitypes.ExecSpec) engine.ExecRequest {
	return engine.ExecRequest{Command: w.Command, Args: w.Args, Shell: w.Shell, Env: w.Env, Cwd: w.Cwd, UID: w.UID, GID: w.GID,
		Stdin: stdin(w.Stdin), TruncateOutputAt: w.TruncateOutputAt}
}

func importRequest(w apitypes.ImageImportRequest) engine.ImportRequest {
	r := engine.ImportRequest{Registry: oplog.ImportSource{URL: w.Registry.URL}, Tag: w.Tag, Timeout: w.Timeout}
	if c := w.Registry.Credentials; c != nil {
		r.Registry.Credentials = &oplog.Credentials{Username: c.Username, Password: c.Password}
	}
	return r
}

func wireEvent(ev engine.Event) apitypes.OperationEvent {
	return apitypes.OperationEvent{ID: ev.ID, TS: apitypes.Timestamp(ev.TS), Spid: ev.Spid, Type: ev.Type, Data: ev.Data}
}

// rewire converts one of the engine's records (oplog) to its wire twin.
// A record's JSON is the wire's (the engine stores it so, and operations
// serve it as it is stored), which TestRecordMatchesWire pins field by
// field; going through it keeps one description of each document.
func rewire[W any](record any) (W, error) {
	var w W
	b, err := json.Marshal(record)
	if err == nil {
		err = json.Unmarshal(b, &w)
	}
	if err != nil {
		return w, fmt.Errorf("convert %T to the wire: %w", record, err)
	}
	return w, nil
}
