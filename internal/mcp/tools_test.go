package mcp

import (
	"bytes"
	"encoding/base64"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/arborsh/arbor/internal/baseimage"
)

// localTools is every tool a stdio server (LocalFiles) offers.
var localTools = []string{
	"branch", "cancel_operation", "checkpoint", "diff", "download", "expose_port", "fork_instance", "get_guide", "get_image", "get_operation", "grep",
	"import_image", "lineage", "list_files", "list_images", "list_operations", "read_file", "restore_instance", "rollback", "run",
	"save_instance", "send_input", "set_tag", "sync", "upload", "wait_operations",
}

// TestTools calls every tool with good and bad arguments against a real
// daemon, validating each answer against the tool's output schema.
func TestTools(t *testing.T) {
	e := daemonEnv(t)
	s := connect(t, e.c, Options{LocalFiles: true})

	var names []string
	for n := range s.tools {
		names = append(names, n)
	}
	slices.Sort(names)
	if !slices.Equal(names, localTools) {
		t.Fatalf("tools = %v, want %v", names, localTools)
	}
	t.Cleanup(func() {
		for _, n := range localTools {
			if !s.ok[n] || !s.bad[n] {
				t.Errorf("tool %s: called successfully %v, with bad arguments %v; want both", n, s.ok[n], s.bad[n])
			}
		}
	})

	t.Run("schemas", func(t *testing.T) {
		run := s.tools["run"]
		var in struct {
			Properties map[string]struct {
				Default     any    `json:"default"`
				Description string `json:"description"`
			} `json:"properties"`
			Required []string `json:"required"`
		}
		remarshal(t, run.InputSchema, &in)
		if d := in.Properties["disposable"].Default; d != false {
			t.Errorf("run disposable default = %v, want false (keep state)", d)
		}
		if d := in.Properties["shell"].Default; d != true {
			t.Errorf("run shell default = %v, want true", d)
		}
		if !slices.Contains(in.Required, "image") || !slices.Contains(in.Required, "command") {
			t.Errorf("run required = %v, want image and command", in.Required)
		}
		for _, n := range []string{"run", "branch"} {
			if !strings.Contains(s.tools[n].Description, "SANDBOX") {
				t.Errorf("%s description does not say it starts sandboxes", n)
			}
		}
		for _, n := range []string{"list_files", "read_file", "diff", "lineage", "get_image", "checkpoint", "rollback", "grep"} {
			if !strings.Contains(s.tools[n].Description, "FREE") {
				t.Errorf("%s description does not say it is free", n)
			}
			if n != "checkpoint" && (s.tools[n].Annotations == nil || !s.tools[n].Annotations.ReadOnlyHint) {
				t.Errorf("%s is not annotated read-only", n)
			}
		}
	})

	t.Run("guide", func(t *testing.T) {
		var out GuideOut
		s.call(t, "get_guide", nil, &out)
		if out.Section != "workflow" || !strings.Contains(out.Content, "rollback") || len(out.AvailableSections) != len(guideSections) {
			t.Errorf("get_guide() = %+v", out)
		}
		s.callErr(t, "get_guide", map[string]any{"section": "nope"}, "unknown section", "workflow")
	})

	t.Run("images", func(t *testing.T) {
		var li ListImagesOut
		s.call(t, "list_images", map[string]any{"tagged": true}, &li)
		if !slices.ContainsFunc(li.Images, func(i ImageInfo) bool { return i.UUID == e.base && i.Tag == "busybox:latest" }) {
			t.Errorf("list_images tagged = %+v, want busybox:latest", li.Images)
		}
		s.callErr(t, "list_images", map[string]any{"limit": 5000}, "limit")

		for _, ref := range []string{e.base, "tag:busybox:latest", "busybox:latest"} {
			var im ImageInfo
			s.call(t, "get_image", map[string]any{"image": ref}, &im)
			if im.UUID != e.base {
				t.Errorf("get_image(%s) = %+v, want %s", ref, im, e.base)
			}
		}
		msg := s.callErr(t, "get_image", map[string]any{"image": "no-such-image"}, "not found", "list_images", "busybox:latest")
		t.Logf("unknown image error: %s", msg)
		s.callErr(t, "get_image", map[string]any{}, "image")
	})

	t.Run("inspect", func(t *testing.T) {
		var lf ListFilesOut
		s.call(t, "list_files", map[string]any{"image": "busybox:latest", "path": "/bin"}, &lf)
		if !slices.ContainsFunc(lf.Entries, func(f FileEntry) bool { return f.Name == "busybox" && f.Type == "file" }) {
			t.Errorf("list_files /bin = %+v, want busybox", lf.Entries)
		}
		s.call(t, "list_files", map[string]any{"image": "busybox:latest", "limit": 2}, &lf)
		if lf.Path != "/" || len(lf.Entries) != 2 || !lf.Truncated {
			t.Errorf("list_files / limit 2 = %+v", lf)
		}
		s.callErr(t, "list_files", map[string]any{"image": "busybox:latest", "path": "/nope"}, "/nope", "list_files")

		var rf ReadFileOut
		s.call(t, "read_file", map[string]any{"image": "busybox:latest", "path": "/etc/passwd"}, &rf)
		if !strings.Contains(rf.Content, "root:") || rf.Encoding != "utf-8" || rf.Truncated {
			t.Errorf("read_file /etc/passwd = %+v", rf)
		}
		s.call(t, "read_file", map[string]any{"image": "busybox:latest", "path": "/etc/passwd", "max_bytes": 4, "offset": 1}, &rf)
		if rf.Content != "oot:" || !rf.Truncated || rf.NextOffset != 5 {
			t.Errorf("read_file chunk = %+v, want \"oot:\" next 5", rf)
		}
		s.call(t, "read_file", map[string]any{"image": "busybox:latest", "path": "/bin/busybox", "max_bytes": 16}, &rf)
		if rf.Encoding != "base64" {
			t.Errorf("read_file of a binary: encoding %q, want base64", rf.Encoding)
		}
		s.callErr(t, "read_file", map[string]any{"image": "busybox:latest", "path": "/etc/nope"}, "not found", "list_files")
		s.callErr(t, "read_file", map[string]any{"image": "busybox:latest", "path": "/etc/passwd", "max_bytes": 0}, "max_bytes")

		var g GrepOut
		s.call(t, "grep", map[string]any{"image": "busybox:latest", "pattern": "^root:", "path": "/etc/passwd"}, &g)
		if g.Matches != 1 || g.Lines[0].Path != "/etc/passwd" {
			t.Errorf("grep ^root: = %+v", g)
		}
		s.callErr(t, "grep", map[string]any{"image": "busybox:latest", "pattern": "("}, "grep")

		dest := filepath.Join(t.TempDir(), "out", "passwd")
		var d DownloadOut
		s.call(t, "download", map[string]any{"image": "busybox:latest", "path": "/etc/passwd", "destination": dest}, &d)
		if b, err := os.ReadFile(dest); err != nil || !strings.Contains(string(b), "root:") || d.Size != int64(len(b)) {
			t.Errorf("download wrote %q (%v), answer %+v", b, err, d)
		}
		s.callErr(t, "download", map[string]any{"image": "busybox:latest", "path": "/etc/nope", "destination": dest + "2"}, "not found")
		if _, err := os.Stat(dest + "2"); err == nil {
			t.Errorf("a failed download left %s", dest+"2")
		}
	})

	t.Run("run", func(t *testing.T) {
		var r RunOut
		res := s.call(t, "run", map[string]any{"image": "busybox:latest", "command": "echo hello; echo oops >&2; mkdir -p /root/w; echo x > /root/w/f; exit 3"}, &r)
		if r.ExitCode == nil || *r.ExitCode != 3 || r.Stdout != "hello\n" || r.Stderr != "oops\n" || r.TimedOut || r.Status != "SUCCESS" {
			t.Errorf("run = %+v", r)
		}
		if r.ResultImage == "" || r.ResultImage == e.base || r.Image != e.base || r.Disposable {
			t.Errorf("run kept no new image by default: %+v", r)
		}
		if !strings.Contains(text(res), "exit code 3") || !strings.Contains(r.Next, "failed") {
			t.Errorf("run text = %q next = %q", text(res), r.Next)
		}
		var rf ReadFileOut
		s.call(t, "read_file", map[string]any{"image": r.ResultImage, "path": "/root/w/f"}, &rf)
		if rf.Content != "x\n" {
			t.Errorf("result image file = %q", rf.Content)
		}

		s.call(t, "run", map[string]any{"image": "busybox:latest", "command": "cat; echo $FOO; pwd", "stdin": "in\n", "env": map[string]any{"FOO": "bar"},
			"cwd": "/tmp", "disposable": true}, &r)
		if r.Stdout != "in\nbar\n/tmp\n" || r.ResultImage != "" || !r.Disposable {
			t.Errorf("disposable run = %+v", r)
		}

		s.call(t, "run", map[string]any{"image": "busybox:latest", "command": "/bin/echo", "shell": false, "args": []string{"a b", "c"}}, &r)
		if r.Stdout != "a b c\n" {
			t.Errorf("exec run stdout = %q", r.Stdout)
		}

		s.call(t, "run", map[string]any{"image": "busybox:latest", "command": "seq 1 20000", "max_output": 200, "disposable": true}, &r)
		if len(r.Stdout) > 260 || !strings.HasSuffix(r.Stdout, "20000\n") || !strings.HasPrefix(r.Stdout, "1\n2\n") || !strings.Contains(r.Note, "get_operation") {
			t.Errorf("long output = %q (note %q), want head and tail with a note", r.Stdout, r.Note)
		}
		var op OperationInfo
		s.call(t, "get_operation", map[string]any{"operation_id": r.OperationID, "max_output": 1 << 20}, &op)
		if !strings.HasPrefix(op.Stdout, "1\n2\n3\n") || strings.Count(op.Stdout, "\n") != 20000 {
			t.Errorf("get_operation full stdout has %d lines", strings.Count(op.Stdout, "\n"))
		}

		s.call(t, "run", map[string]any{"image": "busybox:latest", "command": "sleep 5", "timeout": 1, "disposable": true}, &r)
		if !r.TimedOut || !strings.Contains(r.Next, "timeout") {
			t.Errorf("timed-out run = %+v", r)
		}

		s.call(t, "run", map[string]any{"image": "busybox:latest", "command": "echo ok > /root/ok", "checkpoint": "run-ok"}, &r)
		if r.Checkpoint != "run-ok" {
			t.Errorf("run checkpoint = %+v", r)
		}
		var im ImageInfo
		s.call(t, "get_image", map[string]any{"image": "run-ok"}, &im)
		if im.UUID != r.ResultImage {
			t.Errorf("checkpoint run-ok = %s, want %s", im.UUID, r.ResultImage)
		}

		// A run that changes nothing returns its input image, whose name stays.
		s.call(t, "run", map[string]any{"image": "busybox:latest", "command": "true", "checkpoint": "steal"}, &r)
		if r.Checkpoint != "" || r.ResultImage != e.base || !strings.Contains(r.Note, "already checkpointed as \"busybox:latest\"") {
			t.Errorf("checkpointing an unchanged run = %+v", r)
		}
		s.call(t, "get_image", map[string]any{"image": "busybox:latest"}, &im)

		s.callErr(t, "run", map[string]any{"image": "busybox:latest"}, "command")
		s.callErr(t, "run", map[string]any{"image": "nope", "command": "true"}, "not found", "busybox:latest")
		s.callErr(t, "run", map[string]any{"image": "busybox:latest", "command": "true", "timeout": -1}, "timeout")
		s.callErr(t, "run", map[string]any{"image": "busybox:latest", "command": "true", "syncs": []string{"sync-0"}}, "sync")
		s.callErr(t, "run", map[string]any{"image": "busybox:latest", "command": "true", "shell": "yes"}, "shell")
	})

	t.Run("upload and sync", func(t *testing.T) {
		var up UploadOut
		s.call(t, "upload", map[string]any{"content": "echo uploaded\n"}, &up)
		if up.UUID == "" || up.Size != 14 {
			t.Errorf("upload = %+v", up)
		}
		var again UploadOut
		s.call(t, "upload", map[string]any{"content_base64": base64.StdEncoding.EncodeToString([]byte("echo uploaded\n"))}, &again)
		if again.UUID != up.UUID || !again.Reused {
			t.Errorf("re-upload = %+v, want the same file, reused", again)
		}
		s.callErr(t, "upload", map[string]any{}, "exactly one")
		s.callErr(t, "upload", map[string]any{"content_base64": "!!"}, "base64")
		s.callErr(t, "upload", map[string]any{"path": "/nonexistent/file"}, "local file")

		var r RunOut
		s.call(t, "run", map[string]any{"image": "busybox:latest", "command": "sh /root/s.sh", "files": map[string]any{"/root/s.sh": up.UUID}, "disposable": true}, &r)
		if r.Stdout != "uploaded\n" {
			t.Errorf("run with files: stdout %q", r.Stdout)
		}

		dir := t.TempDir()
		write := func(name, content string, mode os.FileMode) {
			t.Helper()
			p := filepath.Join(dir, name)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(content), mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(p, mode); err != nil {
				t.Fatal(err)
			}
		}
		write("run.sh", "#!/bin/sh\necho run $(cat data/a.txt)\n", 0o755)
		write("data/a.txt", "A1", 0o644)
		write("data/b.txt", "B", 0o600)
		write(".git/HEAD", "ref", 0o644)
		write("x.pyc", "junk", 0o644)
		if err := os.Symlink("run.sh", filepath.Join(dir, "link")); err != nil {
			t.Fatal(err)
		}
		var so SyncOut
		s.call(t, "sync", map[string]any{"source": dir, "destination": "/root/proj"}, &so)
		if so.Files != 3 || so.Uploaded+so.Unchanged != 3 || so.Skipped != 1 {
			t.Errorf("sync = %+v, want 3 files (.git and *.pyc excluded), 1 symlink skipped", so)
		}
		s.call(t, "run", map[string]any{"image": "busybox:latest", "command": "cd /root/proj && ./run.sh && stat -c %a data/b.txt && ls -a", "syncs": []string{so.SyncID}, "disposable": true}, &r)
		if r.Stdout != "run A1\n600\n.\n..\ndata\nrun.sh\n" {
			t.Errorf("run with sync: stdout %q stderr %q", r.Stdout, r.Stderr)
		}
		write("data/a.txt", "A2", 0o644)
		var so2 SyncOut
		s.call(t, "sync", map[string]any{"source": dir, "destination": "/root/proj", "exclude": []string{}}, &so2)
		if so2.Files != 5 || so2.Uploaded != 3 || so2.Unchanged != 2 {
			t.Errorf("re-sync after one edit = %+v, want 5 files (nothing excluded), 3 uploaded (the edit and the 2 no longer excluded)", so2)
		}
		s.callErr(t, "sync", map[string]any{"source": filepath.Join(dir, "missing"), "destination": "/root/x"}, "not a local directory")
		s.callErr(t, "sync", map[string]any{"source": dir, "destination": "relative"}, "absolute")
	})

	t.Run("import and tags", func(t *testing.T) {
		var buf bytes.Buffer
		if err := baseimage.WriteBusyboxTar(&buf); err != nil {
			t.Fatal(err)
		}
		tarPath := filepath.Join(t.TempDir(), "rootfs.tar")
		if err := os.WriteFile(tarPath, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		var up UploadOut
		s.call(t, "upload", map[string]any{"path": tarPath}, &up)
		var op OperationInfo
		s.call(t, "import_image", map[string]any{"registry_url": "upload://" + up.UUID, "tag": "bb-imported"}, &op)
		if op.Status != "SUCCESS" || op.ResultImage == "" || op.Kind != "image_import" {
			t.Fatalf("import_image = %+v", op)
		}
		s.callErr(t, "import_image", map[string]any{"registry_url": "upload://00000000-0000-0000-0000-000000000000"}, "import")
		s.callErr(t, "import_image", map[string]any{"registry_url": ""}, "registry_url")

		var im ImageInfo
		s.call(t, "set_tag", map[string]any{"image": op.ResultImage, "tag": "bb-renamed"}, &im)
		if im.Tag != "bb-renamed" {
			t.Errorf("set_tag = %+v", im)
		}
		s.call(t, "set_tag", map[string]any{"image": "bb-renamed"}, &im)
		if im.Tag != "" {
			t.Errorf("set_tag without tag left %q", im.Tag)
		}
		s.callErr(t, "set_tag", map[string]any{"image": op.ResultImage, "tag": "bad tag!"}, "invalid tag")
		s.callErr(t, "set_tag", map[string]any{"image": "bb-renamed", "tag": "x"}, "not found")
	})

	t.Run("operations", func(t *testing.T) {
		var slow, fast RunOut
		s.call(t, "run", map[string]any{"image": "busybox:latest", "command": "sleep 30", "wait": false, "disposable": true}, &slow)
		s.call(t, "run", map[string]any{"image": "busybox:latest", "command": "echo fast", "wait": false, "disposable": true}, &fast)
		if slow.OperationID == "" || slow.Done || !strings.Contains(slow.Next, "wait_operations") {
			t.Errorf("background run = %+v", slow)
		}
		var lo ListOperationsOut
		s.call(t, "list_operations", map[string]any{"limit": 5}, &lo)
		if !slices.ContainsFunc(lo.Operations, func(o OperationSummary) bool { return o.OperationID == slow.OperationID }) {
			t.Errorf("list_operations = %+v, want %s", lo, slow.OperationID)
		}
		s.callErr(t, "list_operations", map[string]any{"status": "RUNNING"}, "EXECUTING")

		var w WaitOut
		s.call(t, "wait_operations", map[string]any{"operation_ids": []string{slow.OperationID, fast.OperationID}, "mode": "any"}, &w)
		if !slices.Contains(w.Completed, fast.OperationID) || !slices.Contains(w.Pending, slow.OperationID) || w.TimedOut {
			t.Errorf("wait_operations any = %+v", w)
		}
		if w.Results[1].Stdout != "fast\n" {
			t.Errorf("wait result stdout = %q", w.Results[1].Stdout)
		}
		s.call(t, "wait_operations", map[string]any{"operation_ids": []string{slow.OperationID}, "timeout": 1}, &w)
		if !w.TimedOut || len(w.Pending) != 1 {
			t.Errorf("wait_operations timeout = %+v", w)
		}
		s.callErr(t, "wait_operations", map[string]any{"operation_ids": []string{}}, "operation_ids")
		s.callErr(t, "wait_operations", map[string]any{"operation_ids": []string{"00000000-0000-0000-0000-000000000000"}}, "not found", "list_operations")
		s.callErr(t, "wait_operations", map[string]any{"operation_ids": []string{slow.OperationID}, "mode": "some"}, "mode")

		var c CancelOut
		s.call(t, "cancel_operation", map[string]any{"operation_id": slow.OperationID}, &c)
		if !c.Cancelled || c.Status != "CANCELLED" {
			t.Errorf("cancel_operation = %+v", c)
		}
		s.call(t, "cancel_operation", map[string]any{"operation_id": slow.OperationID}, &c)
		if c.Cancelled || !strings.Contains(c.Note, "already finished") {
			t.Errorf("second cancel_operation = %+v", c)
		}
		s.callErr(t, "cancel_operation", map[string]any{"operation_id": "nope"}, "not found")
		s.callErr(t, "get_operation", map[string]any{"operation_id": "00000000-0000-0000-0000-000000000000"}, "not found", "list_operations")
	})

	t.Run("branch compare keep", func(t *testing.T) { testBranchCompareKeep(t, s) })

	t.Run("fork_instance", func(t *testing.T) { testForkInstance(t, e, s) })
	t.Run("save_instance", func(t *testing.T) { testSaveInstance(t, e, s) })
	t.Run("expose_port", func(t *testing.T) { testExposePort(t, e, s) })
	t.Run("send_input", func(t *testing.T) { testSendInput(t, s) })
	t.Run("run egress_denied", func(t *testing.T) { testRunEgressDenied(t, s) })

	t.Run("branch errors", func(t *testing.T) {
		s.callErr(t, "branch", map[string]any{"image": "busybox:latest", "commands": []string{}}, "1 to 16")
		s.callErr(t, "branch", map[string]any{"image": "busybox:latest", "commands": make([]string, 17)}, "1 to 16")
		s.callErr(t, "branch", map[string]any{"image": "busybox:latest", "commands": []string{"true", " "}}, "commands[1]")
		s.callErr(t, "branch", map[string]any{"image": "gone", "commands": []string{"true"}}, "not found")
	})
}
