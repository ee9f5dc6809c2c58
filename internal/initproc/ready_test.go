package initproc

import (
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"time"
)

// TestWaitReady: a warm init says it serves, first and once, and the agent
// then runs commands; a cold one (serve --exit, Go or C) never says so, as
// its agent sends the request at once.
func TestWaitReady(t *testing.T) {
	forInits(t, func(t *testing.T, k initKind) {
		a, _ := startServer(t, k) // a warm one's WaitReady is in startServer
		if k.exit {
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			if err := a.WaitReady(ctx); !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("WaitReady on a cold init = %v, want its deadline", err)
			}
			return
		}
		// Once only: no second 'r' comes.
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		if err := a.WaitReady(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("a second WaitReady = %v, want its deadline", err)
		}
	})
	// The agent is usable after a warm init's WaitReady (startServer's).
	a, _ := startServer(t)
	var out strings.Builder
	x, _, err := a.Run(Request{Args: []string{"/bin/sh", "-c", "echo ok"}, Env: []string{"PATH=/usr/bin:/bin"}, Cwd: "/",
		UID: uint32(os.Getuid()), GID: uint32(os.Getgid())}, nil, &out, io.Discard, nil)
	if err != nil || x.Code != 0 || out.String() != "ok\n" {
		t.Fatalf("Run after WaitReady = %+v %v %q", x, err, out.String())
	}
}

// TestWaitReadyFrames: only one empty 'r' is a ready init; anything else is
// a protocol error, a closed pipe a gone sandbox, a silent one its
// context's end; and 'r' is legal nowhere else.
func TestWaitReadyFrames(t *testing.T) {
	for _, tc := range []struct {
		name, script string
		check        func(error) bool
	}{
		{"ready", frame(frameReady, ""), func(err error) bool { return err == nil }},
		{"payload", frame(frameReady, "x"), IsProtocolError},
		{"other frame", frame(frameStarted, pid7), IsProtocolError},
		{"gone", "", IsSandboxGone},
		{"cut", "r\x00\x00", IsSandboxGone},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := fakeAgent(tc.script).WaitReady(context.Background()); !tc.check(err) {
				t.Fatalf("WaitReady = %v", err)
			}
		})
	}
	for _, script := range []string{frame(frameReady, ""), frame(frameStarted, pid7) + frame(frameReady, "")} {
		if _, _, err := fakeAgent(script).Run(Request{Args: []string{"x"}}, nil, nil, nil, nil); !IsProtocolError(err) {
			t.Errorf("Run reading %q = %v, want a protocol error", script, err)
		}
	}
	if err := fakeAgent(frame(frameReady, "")).Place(strings.NewReader("")); !IsProtocolError(err) {
		t.Errorf("Place reading 'r' = %v, want a protocol error", err)
	}
	// A silent init: the wait ends with its context, on a real pipe.
	a, pipes, err := NewAgentPipes()
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	defer pipes.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := a.WaitReady(ctx); !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "did not start serving") {
		t.Fatalf("WaitReady on a silent init = %v", err)
	}
	ctx2, cancel2 := context.WithCancel(context.Background())
	a2, pipes2, err := NewAgentPipes()
	if err != nil {
		t.Fatal(err)
	}
	defer a2.Close()
	defer pipes2.Close()
	time.AfterFunc(50*time.Millisecond, cancel2)
	if err := a2.WaitReady(ctx2); !errors.Is(err, context.Canceled) {
		t.Fatalf("WaitReady cancelled = %v", err)
	}
}

// TestWaitReadyLeavesNoDeadline: however the wait and its context's end
// race, the agent's reads after WaitReady have no deadline left.
func TestWaitReadyLeavesNoDeadline(t *testing.T) {
	for i := range 300 {
		a, pipes, err := NewAgentPipes()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(pipes.Stdout, frame(frameReady, "")+"x"); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel() // ends as the frame is there to read
		_ = a.WaitReady(ctx)
		time.Sleep(time.Millisecond) // time for a late deadline to land
		var b [1]byte
		if _, err := a.r.Read(b[:]); err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("try %d: a read after WaitReady hit a deadline: %v", i, err)
		}
		pipes.Close()
		a.Close()
	}
}
