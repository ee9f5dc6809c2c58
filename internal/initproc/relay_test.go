package initproc

import (
	"encoding/binary"
	"io"
	"net"
	"testing"

	"github.com/hashicorp/yamux"
)

// TestRelayStream: a stream to a listening port carries bytes both ways,
// with the client's end of input passed on (half-close), after status 0;
// a port nothing listens on answers status 1 and says why.
func TestRelayStream(t *testing.T) {
	a, b := net.Pipe()
	srv, err := yamux.Server(a, RelayConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	go func() {
		for {
			st, err := srv.Accept()
			if err != nil {
				return
			}
			go relayStream(st)
		}
	}()
	cli, err := yamux.Client(b, RelayConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() { // answers what it read once its input ends
		c, err := ln.Accept()
		if err != nil {
			return
		}
		in, _ := io.ReadAll(c)
		_, _ = c.Write(append([]byte("got:"), in...))
		c.Close()
	}()
	open := func(port int) (*yamux.Stream, byte) {
		st, err := cli.OpenStream()
		if err != nil {
			t.Fatal(err)
		}
		var hdr [2]byte
		binary.BigEndian.PutUint16(hdr[:], uint16(port))
		if _, err := st.Write(hdr[:]); err != nil {
			t.Fatal(err)
		}
		var status [1]byte
		if _, err := io.ReadFull(st, status[:]); err != nil {
			t.Fatal(err)
		}
		return st, status[0]
	}
	st, status := open(ln.Addr().(*net.TCPAddr).Port)
	if status != RelayConnected {
		t.Fatalf("status %d to a listening port", status)
	}
	if _, err := st.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	st.Close() // half-close: the answer still comes
	if got, err := io.ReadAll(st); err != nil || string(got) != "got:hello" {
		t.Errorf("answer %q, %v; want got:hello", got, err)
	}

	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := dead.Addr().(*net.TCPAddr).Port
	dead.Close()
	st, status = open(port)
	msg, _ := io.ReadAll(st)
	if status != RelayRefused || len(msg) < 1 || string(msg[1:]) != "connection refused" || int(msg[0]) != len(msg)-1 {
		t.Errorf("closed port: status %d, message %q; want 1 and a counted \"connection refused\"", status, msg)
	}
}
