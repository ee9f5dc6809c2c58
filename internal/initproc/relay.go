package initproc

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/hashicorp/yamux"
	"golang.org/x/sys/unix"
)

// RelayMode is the mode that carries connections to ports inside a
// running sandbox for the daemon's port previews. The engine execs it into
// the sandbox (runtime.ExecSpec.InitMode) with its stdin and stdout as the
// only channel: a yamux session over them, on which the engine opens one
// stream per connection. A stream starts with the port to dial on the
// sandbox's loopback (two bytes, big-endian); the relay answers one status
// byte, then, if 0 (connected), the stream carries the connection's bytes
// both ways; else a message of up to 255 bytes follows (its length as one
// byte) saying why the port could not be reached. The sandbox needs no
// network device for this: the relay dials inside the sandbox's own
// namespace, and nothing outside it is opened.
const RelayMode = "relay"

// Relay status bytes.
const (
	RelayConnected byte = 0
	RelayRefused   byte = 1
)

// relayDialTimeout bounds a dial on the sandbox's loopback, which fails at
// once unless the sandbox is too loaded to answer.
const relayDialTimeout = 10 * time.Second

// stdio is the relay's end of the session: stdin and stdout as one stream.
type stdio struct {
	io.Reader
	io.WriteCloser
}

// relay serves streams until the engine closes the session (its end of
// the pipes), then exits.
func relay() int {
	closeSelf()
	// Not dumpable: a process of the sandbox cannot open the session's
	// pipes through /proc/<relay>/fd.
	_ = unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0)
	sess, err := yamux.Server(stdio{os.Stdin, os.Stdout}, RelayConfig())
	if err != nil {
		fmt.Fprintln(os.Stderr, "arbor relay:", err)
		return 1
	}
	for {
		st, err := sess.Accept()
		if err != nil {
			return 0 // the engine hung up: the preview ended
		}
		go relayStream(st)
	}
}

// RelayConfig is the session configuration both ends use: no keepalives
// (the pipes break only when one end dies, which closes them) and no log.
func RelayConfig() *yamux.Config {
	c := yamux.DefaultConfig()
	c.EnableKeepAlive = false
	c.LogOutput = io.Discard
	c.ConnectionWriteTimeout = 30 * time.Second
	return c
}

func relayStream(st net.Conn) {
	defer st.Close()
	var hdr [2]byte
	if _, err := io.ReadFull(st, hdr[:]); err != nil {
		return
	}
	port := int(binary.BigEndian.Uint16(hdr[:]))
	c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), relayDialTimeout)
	if err != nil {
		msg := err.Error()
		var errno unix.Errno
		if errors.As(err, &errno) && errno == unix.ECONNREFUSED {
			msg = "connection refused"
		}
		if len(msg) > 255 {
			msg = msg[:255]
		}
		_, _ = st.Write(append([]byte{RelayRefused, byte(len(msg))}, msg...))
		return
	}
	defer c.Close()
	if _, err := st.Write([]byte{RelayConnected}); err != nil {
		return
	}
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(c, st)
		_ = c.(*net.TCPConn).CloseWrite() // the client's end of request
		close(done)
	}()
	_, _ = io.Copy(st, c)
	_ = st.Close() // half-close: yamux sends FIN, reads go on
	<-done
}
