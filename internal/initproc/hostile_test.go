package initproc

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"
)

// frame encodes one frame as the init would send it.
func frame(typ byte, payload string) string {
	var hdr [5]byte
	hdr[0] = typ
	binary.BigEndian.PutUint32(hdr[1:], uint32(len(payload)))
	return string(hdr[:]) + payload
}

// fakeAgent is an agent whose init's output is script and whose requests
// go nowhere.
func fakeAgent(script string) *Agent {
	return &Agent{r: strings.NewReader(script), w: &frameWriter{w: io.Discard}}
}

const pid7 = "\x00\x00\x00\x07"

// TestAgentRejectsHostileFrames: a sandbox controls every byte the agent
// reads. Frames out of order, duplicated, unknown, oversized or malformed
// end the run with a ProtocolError; onStart runs at most once; nothing
// panics. (A forged second 's' frame used to make the engine close a
// closed channel and crash the daemon.)
func TestAgentRejectsHostileFrames(t *testing.T) {
	exit0 := frame(frameExit, `{"code":0}`)
	for _, tc := range []struct{ name, script string }{
		{"duplicate start", frame(frameStarted, pid7) + frame(frameStarted, pid7) + exit0},
		{"output before start", frame(frameStdout, "x") + frame(frameStarted, pid7) + exit0},
		{"exit before start", exit0},
		{"place reply during run", frame(frameStarted, pid7) + frame(framePlaced, "")},
		{"unknown type", frame(frameStarted, pid7) + frame('Z', "")},
		{"engine-bound type", frame(frameStarted, pid7) + frame(frameRun, "{}")},
		{"oversized output", frame(frameStarted, pid7) + frame(frameStdout, strings.Repeat("x", outChunk+1))},
		{"empty output", frame(frameStarted, pid7) + frame(frameStdout, "")},
		{"lying length", frame(frameStarted, pid7) + "O\xff\xff\xff\xff"},
		{"short pid", frame(frameStarted, "\x00\x07")},
		{"pid 0", frame(frameStarted, "\x00\x00\x00\x00")},
		{"huge pid", frame(frameStarted, "\xff\xff\xff\xff")},
		{"bad exit json", frame(frameStarted, pid7) + frame(frameExit, `{"code":`)},
		{"impossible exit code", frame(frameStarted, pid7) + frame(frameExit, `{"code":300}`)},
		{"exit with code and signal", frame(frameStarted, pid7) + frame(frameExit, `{"code":0,"signal":9}`)},
		{"signal out of range", frame(frameStarted, pid7) + frame(frameExit, `{"code":-1,"signal":65}`)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := fakeAgent(tc.script)
			starts := 0
			_, _, err := a.Run(Request{Args: []string{"x"}}, nil, io.Discard, io.Discard, func(int) { starts++ })
			if !IsProtocolError(err) {
				t.Fatalf("Run = %v, want a protocol error", err)
			}
			if starts > 1 {
				t.Fatalf("onStart ran %d times", starts)
			}
			if _, _, err := a.Run(Request{Args: []string{"x"}}, nil, nil, nil, nil); err == nil {
				t.Fatal("a broken agent ran a second command")
			}
		})
	}
	// After the exit nothing more is read: the sandbox is destroyed next
	// and the agent refuses further use.
	a := fakeAgent(frame(frameStarted, pid7) + exit0 + frame(frameStarted, pid7) + exit0)
	if _, _, err := a.Run(Request{Args: []string{"x"}}, nil, nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.Run(Request{Args: []string{"x"}}, nil, nil, nil, nil); err == nil {
		t.Fatal("an agent ran a second command")
	}
	if err := a.Place(strings.NewReader("")); err == nil {
		t.Fatal("an agent placed files after its run")
	}
	// Placing: only one empty-or-message 'p' reply is legal.
	for _, script := range []string{frame(frameStarted, pid7), frame(frameExit, `{"code":0}`), "p\x00\x01\x00\x01"} {
		if err := fakeAgent(script).Place(strings.NewReader("")); !IsProtocolError(err) {
			t.Errorf("Place with reply %q = %v, want a protocol error", script, err)
		}
	}
}

// TestAgentAcceptsProtocol: the frames the init really sends are accepted,
// signal deaths included.
func TestAgentAcceptsProtocol(t *testing.T) {
	a := fakeAgent(frame(framePlaced, "") + frame(frameStarted, pid7) + frame(frameStdout, "out") + frame(frameStderr, "err") +
		frame(frameExit, `{"code":-1,"signal":9}`))
	if err := a.Place(strings.NewReader("")); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	pid := 0
	x, _, err := a.Run(Request{Args: []string{"x"}}, nil, &out, &errb, func(p int) { pid = p })
	if err != nil || x.Code != -1 || x.Signal != 9 || pid != 7 || out.String() != "out" || errb.String() != "err" {
		t.Fatalf("Run = %+v %v, pid %d, out %q err %q", x, err, pid, out.String(), errb.String())
	}
}

// FuzzAgent feeds arbitrary bytes as the init's output to Place and Run:
// no panic, onStart at most once, and a result only if it is a real exit.
func FuzzAgent(f *testing.F) {
	f.Add([]byte(frame(framePlaced, "") + frame(frameStarted, pid7) + frame(frameStdout, "hi") + frame(frameExit, `{"code":3}`)))
	f.Add([]byte(frame(frameStarted, pid7) + frame(frameStarted, pid7)))
	f.Add([]byte(frame(frameError, "nope")))
	f.Add([]byte(frame(frameStarted, pid7) + frame(frameExit, `{"code":-1,"signal":15,"rusage":{"Utime":{"Sec":1}}}`)))
	f.Add([]byte("O\xff\xff\xff\xff"))
	f.Fuzz(func(t *testing.T, data []byte) {
		a := &Agent{r: bytes.NewReader(data), w: &frameWriter{w: io.Discard}}
		if len(data) > 0 && data[0] == framePlaced {
			_ = a.Place(strings.NewReader(""))
		}
		starts := 0
		x, _, err := a.Run(Request{Args: []string{"x"}}, nil, io.Discard, io.Discard, func(int) { starts++ })
		if starts > 1 {
			t.Fatalf("onStart ran %d times", starts)
		}
		if err == nil && (!x.valid() || starts != 1) {
			t.Fatalf("accepted exit %+v after %d starts", x, starts)
		}
		if err != nil && !IsProtocolError(err) && !IsSandboxGone(err) && a.phase == phaseStarting {
			t.Fatalf("unclassified error %v", err)
		}
	})
}

// FuzzReadFrame: the engine-side frame reader of the init never reads
// past a frame's declared length nor accepts one over its limit.
func FuzzReadFrame(f *testing.F) {
	f.Add([]byte(frame(frameRun, `{"args":["sh"]}`)))
	f.Add([]byte("R\xff\xff\xff\xff"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		for {
			typ, p, err := readFrame(r, 1024)
			if err != nil {
				if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || strings.Contains(err.Error(), "exceeds") {
					return
				}
				t.Fatalf("readFrame: %v", err)
			}
			if len(p) > 1024 {
				t.Fatalf("frame %q of %d bytes over the limit", typ, len(p))
			}
		}
	})
}
