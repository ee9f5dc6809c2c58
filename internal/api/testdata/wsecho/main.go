// Command wsecho serves a WebSocket echo on the address it is given, for
// the port preview tests: built static and placed into busybox sandboxes,
// which have no WebSocket server. A plain request gets back what arrived:
// its path, query, X-Forwarded-Prefix and Authorization.
package main

import (
	"context"
	"fmt"
	"net/http"
	"os"

	"github.com/coder/websocket"
)

func main() {
	err := http.ListenAndServe(os.Args[1], http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") == "" {
			fmt.Fprintf(w, "path=%s query=%s prefix=%s auth=%s", r.URL.EscapedPath(), r.URL.RawQuery, r.Header.Get("X-Forwarded-Prefix"), r.Header.Get("Authorization"))
			return
		}
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
		if err != nil {
			return
		}
		defer c.CloseNow()
		c.SetReadLimit(1 << 20)
		ctx := context.Background()
		for {
			typ, b, err := c.Read(ctx)
			if err != nil {
				return
			}
			if err := c.Write(ctx, typ, append([]byte("echo:"), b...)); err != nil {
				return
			}
		}
	}))
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}
