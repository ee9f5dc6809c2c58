package runtime

import (
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// TestKillGroupSparesReusedPid: the delayed kill of a runtime's process
// group must not reach a group whose id now belongs to another process (a
// reused pid), and must reach the group it was meant for.
func TestKillGroupSparesReusedPid(t *testing.T) {
	for _, tc := range []struct {
		name     string
		start    func(pid int) string
		wantDead bool
	}{
		{"same process", procStart, true},
		{"pid reused by another process", func(int) string { return "1" }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command("sleep", "60")
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			pid := cmd.Process.Pid
			if procStart(pid) == "" {
				t.Fatalf("procStart(%d) of a live child is empty", pid)
			}
			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait() }()
			t.Cleanup(func() { _ = cmd.Process.Kill(); <-exited })
			killGroup(pid, tc.start(pid))
			select {
			case err := <-exited:
				exited <- err // for the cleanup
				if !tc.wantDead {
					t.Fatal("killGroup killed a group whose leader is another process")
				}
			case <-time.After(2 * time.Second):
				if tc.wantDead {
					t.Fatal("killGroup did not kill its own group")
				}
			}
		})
	}
	if s := procStart(0); s != "" {
		t.Errorf("procStart(0) = %q, want empty", s)
	}
}
