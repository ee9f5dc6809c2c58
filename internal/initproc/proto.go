package initproc

import (
	"encoding/binary"
	"fmt"
	"io"
	"sync"
	"syscall"
)

// The serve mode talks to the engine over the init's stdin and stdout, two
// pipes handed to the sandbox at boot, so a run needs no runtime process
// (`runsc exec` costs ~60-90 ms, most of it the runsc binary starting).
// Both directions carry frames: one type byte, a big-endian uint32 length,
// then the payload.
//
// Engine → init:
//
//	'P' a chunk of a tar of files to place (as the place mode reads),
//	'Q' its end                                     → 'p' reply
//	'R' JSON Request: start the command             → 's' pid or 'e' error
//	'C' the same Request, compact (see encodeCompact), for the C init
//	'I' stdin bytes, 'i' end of stdin
//	'S' a signal for the command: its number (one byte), then the
//	    command's pid (big-endian uint32), so it reaches no later command
//
// Init → engine: 'r' once, first, from an init that serves more than one
// command (a warm sandbox): it is serving, so a request gets its answer at
// once; 'p' place result (empty: done, else the error), 's' the
// command's pid (4 bytes), 'e' why it could not start, 'O'/'E' stdout and
// stderr bytes, 'x' JSON Exit once the command has exited, then (unless
// the init exits after its command) 'f' once the sandbox is fresh for the
// next command: empty, or what could not be made fresh (continue.go).
const (
	framePlace    = 'P'
	framePlaceEnd = 'Q'
	frameRun      = 'R'
	frameCompact  = 'C'
	frameStdin    = 'I'
	frameStdinEOF = 'i'
	frameSignal   = 'S'

	frameReady   = 'r'
	framePlaced  = 'p'
	frameStarted = 's'
	frameError   = 'e'
	frameStdout  = 'O'
	frameStderr  = 'E'
	frameExit    = 'x'
	frameFresh   = 'f'
)

// maxFrame bounds a frame's payload in either direction.
const maxFrame = 1 << 20

// Bounds on what the init may send, per frame type: the engine reads every
// byte from a sandbox as hostile. The init sends output in chunks of at
// most outChunk bytes.
const (
	outChunk    = 32 << 10
	maxMessage  = 64 << 10 // 'p' and 'e': an error text
	maxExitJSON = 4 << 10
)

// Request is the command a served sandbox runs.
type Request struct {
	Args     []string `json:"args"`
	Env      []string `json:"env"`
	Cwd      string   `json:"cwd"`
	UID      uint32   `json:"uid"`
	GID      uint32   `json:"gid"`
	FileSize int64    `json:"fsize,omitempty"` // RLIMIT_FSIZE; 0: unlimited
}

// encodeCompact encodes req as the C init (cmd/arbor-init-c) reads it:
// uid, gid (uint32), the file size limit (uint64), the number of args and
// of env entries (uint32), then cwd, the args and the env, each a uint32
// length and its bytes; all big-endian. The C init then needs no JSON
// parser: no string unescaping or number parsing in C.
func encodeCompact(req Request) []byte {
	b := make([]byte, 24, 64)
	binary.BigEndian.PutUint32(b[0:], req.UID)
	binary.BigEndian.PutUint32(b[4:], req.GID)
	binary.BigEndian.PutUint64(b[8:], uint64(max(req.FileSize, 0)))
	binary.BigEndian.PutUint32(b[16:], uint32(len(req.Args)))
	binary.BigEndian.PutUint32(b[20:], uint32(len(req.Env)))
	for _, s := range append(append([]string{req.Cwd}, req.Args...), req.Env...) {
		b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
		b = append(b, s...)
	}
	return b
}

// Exit is how the command ended, with its resource usage: Code is its
// exit status (0-255) and Signal 0, or Code is -1 and Signal the signal
// that killed it.
type Exit struct {
	Code   int            `json:"code"`
	Signal int            `json:"signal,omitempty"`
	Rusage syscall.Rusage `json:"rusage"`
}

// exitOf converts a wait status.
func exitOf(ws syscall.WaitStatus, ru syscall.Rusage) Exit {
	if ws.Signaled() {
		return Exit{Code: -1, Signal: int(ws.Signal()), Rusage: ru}
	}
	return Exit{Code: ws.ExitStatus(), Rusage: ru}
}

// valid reports whether x is an exit the kernel can produce.
func (x Exit) valid() bool {
	if x.Signal == 0 {
		return x.Code >= 0 && x.Code <= 255
	}
	return x.Code == -1 && x.Signal > 0 && x.Signal <= 64
}

type frameWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (f *frameWriter) write(typ byte, payload []byte) error {
	if len(payload) > maxFrame {
		return fmt.Errorf("frame of %d bytes is too large", len(payload))
	}
	// One write per frame: a sandbox checkpointed between a header and
	// its payload would start its copies' streams mid-frame.
	b := make([]byte, 5+len(payload))
	b[0] = typ
	binary.BigEndian.PutUint32(b[1:], uint32(len(payload)))
	copy(b[5:], payload)
	f.mu.Lock()
	defer f.mu.Unlock()
	_, err := f.w.Write(b)
	return err
}

// readFrame reads one frame, refusing payloads over limit (a lying length
// must not make the reader allocate or wait for more).
func readFrame(r io.Reader, limit int) (byte, []byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if int64(n) > int64(limit) {
		return 0, nil, fmt.Errorf("frame %q of %d bytes exceeds %d", hdr[0], n, limit)
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(r, p); err != nil {
		return 0, nil, err
	}
	return hdr[0], p, nil
}
