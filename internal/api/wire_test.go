package api_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/arborsh/arbor/client/apitypes"
)

// Wire-shape tests: responses decoded into plain maps and checked key by key
// and type by type against the spec's examples (contree-api.md Appendix A),
// because ConTree's clients validate strictly (pydantic, cattrs, Go types).

// wantKeys fails unless m has every required key and nothing beyond the
// required and optional ones.
func wantKeys(t *testing.T, what string, m map[string]any, required []string, optional ...string) {
	t.Helper()
	for _, k := range required {
		if _, ok := m[k]; !ok {
			t.Errorf("%s: missing key %q (have %v)", what, k, keys(m))
		}
	}
	for k := range m {
		if !slices.Contains(required, k) && !slices.Contains(optional, k) {
			t.Errorf("%s: unexpected key %q", what, k)
		}
	}
}

func keys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// JSON type predicates over values decoded into any.
func isInt(v any) bool       { f, ok := v.(float64); return ok && f == math.Trunc(f) }
func isNumber(v any) bool    { _, ok := v.(float64); return ok }
func isString(v any) bool    { _, ok := v.(string); return ok }
func isBool(v any) bool      { _, ok := v.(bool); return ok }
func isObject(v any) bool    { _, ok := v.(map[string]any); return ok }
func isArray(v any) bool     { _, ok := v.([]any); return ok }
func isNull(v any) bool      { return v == nil }
func isStrOrNull(v any) bool { return isNull(v) || isString(v) }

// isTimestamp reports whether v is an RFC 3339 string with an offset.
func isTimestamp(v any) bool {
	s, ok := v.(string)
	if !ok {
		return false
	}
	_, err := time.Parse(time.RFC3339Nano, s)
	return err == nil
}

// wantTypes checks m[key] against a predicate for each entry.
func wantTypes(t *testing.T, what string, m map[string]any, types map[string]func(any) bool) {
	t.Helper()
	for k, pred := range types {
		if v, ok := m[k]; ok && !pred(v) {
			t.Errorf("%s: %s = %#v has the wrong JSON type", what, k, v)
		}
	}
}

var (
	imageKeys    = []string{"uuid", "tag", "created_at", "operation_uuid"}
	imageExtKeys = []string{"parent_uuid", "depth", "layer_bytes"}
	summaryKeys  = []string{"uuid", "kind", "status", "error", "created_at", "duration", "image_size", "consumed_cpu",
		"consumed_memory", "image_uuid", "result_image_uuid"}
	echoKeys = []string{"command", "image", "disposable", "hostname", "args", "shell", "env", "preserve_env", "cwd", "uid", "gid",
		"resources_limits", "networking", "stdin", "timeout", "truncate_output_at", "files", "result"}
	resourceKeys = []string{"block_input", "block_output", "cost", "elapsed_time", "involuntary_switches", "max_rss", "monotonic_time",
		"page_faults", "page_faults_io", "shared_memory", "signals", "swaps", "system_cpu_time", "unshared_memory", "user_cpu_time",
		"voluntary_switches"}
	eventResourceKeys = []string{"user_time_us", "sys_time_us", "max_rss_kb", "shared_memory", "unshared_memory", "swaps", "minor_faults",
		"major_faults", "voluntary_ctx_switches", "involuntary_ctx_switches", "block_input_ops", "block_output_ops", "ipc_msgs_sent",
		"ipc_msgs_received", "signals_received"}
)

func checkImage(t *testing.T, what string, m map[string]any) {
	t.Helper()
	wantKeys(t, what, m, imageKeys, imageExtKeys...)
	wantTypes(t, what, m, map[string]func(any) bool{"uuid": isString, "tag": isStrOrNull, "created_at": isTimestamp,
		"operation_uuid": isStrOrNull})
}

// sseFrame is one parsed server-sent event frame.
type sseFrame struct {
	id, event, data string
}

// parseSSE splits a text/event-stream body into frames and comments.
func parseSSE(t *testing.T, body []byte) (frames []sseFrame, comments []string) {
	t.Helper()
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(nil, 8<<20)
	var f sseFrame
	var fields int
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if fields > 0 {
				frames = append(frames, f)
			}
			f, fields = sseFrame{}, 0
		case strings.HasPrefix(line, ":"):
			comments = append(comments, line)
		default:
			k, v, _ := strings.Cut(line, ":")
			v = strings.TrimPrefix(v, " ")
			fields++
			switch k {
			case "id":
				f.id = v
			case "event":
				f.event = v
			case "data":
				f.data = v
			default:
				t.Errorf("unexpected SSE field %q", line)
			}
		}
	}
	if fields > 0 {
		t.Errorf("event stream ends inside a frame: %q", body)
	}
	return frames, comments
}

// events decodes the frames' data, checking each frame's id and event
// lines against it.
func frameEvents(t *testing.T, frames []sseFrame) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, f := range frames {
		var ev map[string]any
		if err := json.Unmarshal([]byte(f.data), &ev); err != nil {
			t.Fatalf("frame data is not JSON: %q", f.data)
		}
		if fmt.Sprint(ev["id"]) != f.id || ev["type"] != f.event {
			t.Errorf("frame id/event %q/%q disagree with its data %q", f.id, f.event, f.data)
		}
		out = append(out, ev)
	}
	return out
}

func TestWireShapes(t *testing.T) {
	d := realDaemon(t) // places a file owned by root
	file, err := d.c.UploadFile(ctxT(t), strings.NewReader("data for appendix A\n"))
	if err != nil {
		t.Fatal(err)
	}

	// Appendix A spawn, as contree-client sends it (unset fields omitted).
	spawnBody := fmt.Sprintf(`{"command":"echo hello","image":"tag:busybox:latest","shell":true,"timeout":60,"disposable":true,
		"files":{"/srv/data.txt":{"uuid":%q,"mode":"0644","uid":0,"gid":0}},
		"stdin":{"value":"aGkK","encoding":"base64"}}`, file.UUID)
	sp := d.send(t, http.MethodPost, "/v1/instances", spawnBody)
	wantStatus(t, sp, http.StatusCreated)
	echo := sp.object(t)
	opID, _ := echo["uuid"].(string)
	if loc := sp.Header.Get("Location"); loc != "/v1/operations/"+opID {
		t.Errorf("spawn Location = %q, want /v1/operations/%s", loc, opID)
	}
	wantKeys(t, "spawn echo", echo, append([]string{"uuid"}, echoKeys...), "runtime")
	wantTypes(t, "spawn echo", echo, map[string]func(any) bool{"timeout": isInt, "stdin": isObject, "files": isObject,
		"env": isObject, "args": isArray, "truncate_output_at": isInt, "uid": isInt, "result": isNull, "hostname": isString})
	if got := echo["files"].(map[string]any)["/srv/data.txt"].(map[string]any)["mode"]; got != "0644" {
		t.Errorf("echoed files mode = %#v, want the string \"0644\"", got)
	}
	if v := echo["stdin"].(map[string]any)["value"]; v != "aGkK" {
		t.Errorf("echoed stdin.value = %#v", v)
	}
	for k, want := range map[string]any{"hostname": "linuxkit", "cwd": "/root", "truncate_output_at": float64(1048576), "timeout": float64(60)} {
		if echo[k] != want {
			t.Errorf("echo %s = %#v, want default %#v", k, echo[k], want)
		}
	}

	if _, err := d.c.Wait(ctxT(t), opID); err != nil {
		t.Fatal(err)
	}

	t.Run("operation", func(t *testing.T) {
		op := d.get(t, "/v1/operations/"+opID).object(t)
		wantKeys(t, "operation", op, append(append([]string{}, summaryKeys...), "metadata", "result"))
		wantTypes(t, "operation", op, map[string]func(any) bool{"created_at": isTimestamp, "duration": isNumber,
			"error": isNull, "result_image_uuid": isNull, "metadata": isObject, "result": isObject, "image_size": isInt})
		if op["status"] != "SUCCESS" || op["kind"] != "instance" {
			t.Errorf("operation status/kind = %v/%v", op["status"], op["kind"])
		}
		wantKeys(t, "operation.result", op["result"].(map[string]any), []string{"image", "tag"})
		meta := op["metadata"].(map[string]any)
		wantKeys(t, "metadata", meta, echoKeys, "runtime")
		res, ok := meta["result"].(map[string]any)
		if !ok {
			t.Fatalf("metadata.result = %#v, want an object once the process finished", meta["result"])
		}
		wantKeys(t, "metadata.result", res, []string{"state", "stdout", "stderr", "resources"})
		wantKeys(t, "state", res["state"].(map[string]any), []string{"exit_code", "pid", "signal", "timed_out", "core_dump", "stopped", "continued"})
		wantKeys(t, "resources", res["resources"].(map[string]any), resourceKeys)
		st := res["state"].(map[string]any)
		if st["exit_code"] != float64(0) || st["signal"] != float64(-1) || st["timed_out"] != false {
			t.Errorf("state = %v, want exit_code 0, signal -1, timed_out false", st)
		}
		for _, s := range []string{"stdout", "stderr"} {
			sr := res[s].(map[string]any)
			wantKeys(t, s, sr, []string{"value", "encoding", "truncated"})
			wantTypes(t, s, sr, map[string]func(any) bool{"value": isString, "encoding": isString, "truncated": isBool})
		}
		if out := res["stdout"].(map[string]any); out["value"] != "hello\n" || out["encoding"] != "ascii" {
			t.Errorf("stdout = %v, want ascii \"hello\\n\"", out)
		}
	})

	t.Run("events", func(t *testing.T) {
		r := d.get(t, "/v1/operations/"+opID+"/events?follow=1", "Accept: text/event-stream")
		wantStatus(t, r, http.StatusOK)
		if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
			t.Errorf("Content-Type = %q", ct)
		}
		if cc := r.Header.Get("Cache-Control"); cc != "no-cache" {
			t.Errorf("Cache-Control = %q, want no-cache", cc)
		}
		frames, _ := parseSSE(t, r.body)
		evs := frameEvents(t, frames)
		if len(evs) < 4 {
			t.Fatalf("got %d events, want init, spawn, stdout, exit, ..., completion", len(evs))
		}
		var types []string
		for i, ev := range evs {
			wantKeys(t, "event", ev, []string{"id", "ts", "spid", "type", "data"})
			wantTypes(t, "event", ev, map[string]func(any) bool{"id": isInt, "ts": isTimestamp, "spid": isInt, "data": isObject})
			if ev["id"] != float64(i) {
				t.Errorf("event %d has id %v, want ids 0, 1, 2, ...", i, ev["id"])
			}
			types = append(types, ev["type"].(string))
		}
		last := evs[len(evs)-1]
		if last["type"] != "completion" || last["spid"] != float64(0) {
			t.Fatalf("last event = %v, want completion with spid 0 (types %v)", last, types)
		}
		wantTypes(t, "completion", last["data"].(map[string]any), map[string]func(any) bool{"status": isString,
			"result_image_uuid": isStrOrNull, "error": isStrOrNull, "duration_ms": isInt})
		if types[0] != "init" || evs[0]["spid"] != float64(0) {
			t.Errorf("first event = %v, want init with spid 0", evs[0])
		}
		var exit map[string]any
		for _, ev := range evs {
			if ev["type"] == "exit" {
				exit = ev
			}
		}
		if exit == nil || exit["spid"] != float64(1) {
			t.Fatalf("exit event = %v, want one with spid 1 (types %v)", exit, types)
		}
		ed := exit["data"].(map[string]any)
		wantKeys(t, "exit.data", ed, []string{"pid", "code", "signal", "timed_out", "duration_ms", "resources"}, "core_dump")
		wantKeys(t, "exit.resources", ed["resources"].(map[string]any), eventResourceKeys)
		if ed["code"] != float64(0) || ed["signal"] != float64(-1) {
			t.Errorf("exit data = %v, want code 0, signal -1", ed)
		}
		var out string
		for _, ev := range evs {
			if ev["type"] == "stdout" {
				dd := ev["data"].(map[string]any)
				b, err := apitypes.StreamRepr{Value: dd["value"].(string), Encoding: dd["encoding"].(string)}.Bytes()
				if err != nil {
					t.Fatal(err)
				}
				out += string(b)
			}
		}
		if out != "hello\n" {
			t.Errorf("stdout events carry %q, want %q", out, "hello\n")
		}
	})

	t.Run("operations list is a bare array", func(t *testing.T) {
		list, ok := d.get(t, "/v1/operations?limit=5").json(t).([]any)
		if !ok || len(list) == 0 {
			t.Fatalf("GET /v1/operations is not a non-empty JSON array")
		}
		for _, v := range list {
			wantKeys(t, "summary", v.(map[string]any), summaryKeys)
			wantTypes(t, "summary", v.(map[string]any), map[string]func(any) bool{"created_at": isTimestamp, "duration": isNumber})
		}
	})

	t.Run("images and files lists are wrapped", func(t *testing.T) {
		im := d.get(t, "/v1/images").object(t)
		wantKeys(t, "image list", im, []string{"images"})
		for _, v := range im["images"].([]any) {
			checkImage(t, "image", v.(map[string]any))
		}
		fl := d.get(t, "/v1/files").object(t)
		wantKeys(t, "file list", fl, []string{"files"})
		for _, v := range fl["files"].([]any) {
			f := v.(map[string]any)
			wantKeys(t, "file", f, []string{"uuid", "sha256", "size", "created_at", "updated_at"})
			wantTypes(t, "file", f, map[string]func(any) bool{"created_at": isTimestamp, "updated_at": isTimestamp, "size": isInt})
		}
	})

	t.Run("find by tag answers 302 with a relative Location", func(t *testing.T) {
		r := d.get(t, "/v1/inspect/?tag=busybox:latest")
		wantStatus(t, r, http.StatusFound)
		if loc := r.Header.Get("Location"); loc != d.base+"/" {
			t.Errorf("Location = %q, want %q", loc, d.base+"/")
		}
		r = d.get(t, "/v1/inspect?tag=busybox:latest")
		wantStatus(t, r, http.StatusFound)
		if loc := r.Header.Get("Location"); loc != "inspect/"+d.base+"/" {
			t.Errorf("slash-less Location = %q, want %q", loc, "inspect/"+d.base+"/")
		}
		checkImage(t, "inspect", d.get(t, "/v1/inspect/"+d.base+"/").object(t))
	})

	t.Run("whoami", func(t *testing.T) {
		w := d.get(t, "/v1/whoami").object(t)
		wantKeys(t, "whoami", w, []string{"token_uuid", "token_expiration", "permissions", "limits", "operations_stat"}, "account")
		wantTypes(t, "whoami", w, map[string]func(any) bool{"token_uuid": isString, "token_expiration": isNull})
		for _, p := range []string{"list", "spawn", "spawn_disposable", "import", "cancel", "set_image_tag"} {
			if w["permissions"].(map[string]any)[p] != true {
				t.Errorf("permission %s = %v, want true", p, w["permissions"].(map[string]any)[p])
			}
		}
		lim := w["limits"].(map[string]any)
		if !isInt(lim["instance_max_timeout"]) || !isInt(lim["images_import_max_timeout"]) {
			t.Errorf("limits = %v, want integer instance_max_timeout and images_import_max_timeout", lim)
		}
		for k, v := range w["operations_stat"].(map[string]any) {
			if !isInt(v) {
				t.Errorf("operations_stat[%s] = %v, want an integer", k, v)
			}
		}
	})

	t.Run("errors", func(t *testing.T) {
		r := d.get(t, "/v1/inspect/00000000-0000-4000-8000-000000000000/")
		wantError(t, r, http.StatusNotFound, "not found")
		wantKeys(t, "error body", r.object(t), []string{"error", "status"})
	})
}
