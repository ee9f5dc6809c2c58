package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/arborsh/arbor/internal/api"
	"github.com/arborsh/arbor/internal/engine"
)

// servePreviews starts the listener of port previews when cfg.PreviewListen
// asks for one, and points opts.PreviewBase at it. Pages a sandbox serves
// then live on another origin than the API and the web UI: their scripts
// cannot read the UI's storage or drive it (the browser's same-origin
// policy counts the port). The returned function stops the listener.
func servePreviews(ctx context.Context, e *engine.Engine, cfg Config, log *slog.Logger, opts *api.Options, ch *clusterHTTP) (func(), error) {
	if cfg.PreviewListen == "" {
		return func() {}, nil
	}
	ln, err := net.Listen("tcp", cfg.PreviewListen)
	if err != nil {
		return nil, fmt.Errorf("listen for previews on %s: %w (pass another --preview-listen)", cfg.PreviewListen, err)
	}
	opts.PreviewBase = "http://" + ln.Addr().String()
	var h http.Handler = opts.Metrics.Instrument("/preview/", api.PreviewHandler(e, *opts))
	if ch != nil { // a cluster node: previews of other workers' instances go there
		h = ch.previews(h, h, true)
	}
	srv := newHTTPServer(ctx, h, log, defaultTimeouts)
	go func() { _ = srv.Serve(ln) }()
	log.Info("serving port previews", "url", opts.PreviewBase)
	return func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}, nil
}
