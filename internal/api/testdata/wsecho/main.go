// Command wsecho serves a WebSocket echo at / on the address it is given,
// for the port preview tests: built static and placed into busybox
// sandboxes, which have no WebSocket server.
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
