package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/arborsh/arbor/internal/archive"
	"github.com/arborsh/arbor/internal/errdefs"
	"github.com/arborsh/arbor/internal/oplog"
	"github.com/arborsh/arbor/internal/store"
)

// UploadScheme prefixes an import URL naming an uploaded archive by file
// uuid or sha256: "upload://<ref>" imports a rootfs tarball (optionally gzip).
const UploadScheme = "upload://"

// Import starts an image import operation and returns its id.
func (e *Engine) Import(ctx context.Context, account string, req ImportRequest) (string, error) {
	if err := checkAccount(account); err != nil {
		return "", err
	}
	url := strings.TrimSpace(req.Registry.URL)
	if url == "" {
		return "", errdefs.InvalidArgument("registry.url is required, e.g. docker://docker.io/library/busybox:latest or upload://<file uuid>")
	}
	if scheme, _, ok := strings.Cut(url, "://"); ok && scheme != "docker" && scheme != "oci" && scheme != "upload" {
		return "", errdefs.InvalidArgument("image reference %q has the unsupported scheme %q: use docker://HOST/PATH:TAG, a bare reference like python:3.12-slim, or upload://<file uuid>", url, scheme)
	}
	tag := ""
	if req.Tag != nil && *req.Tag != "" {
		if err := ValidateTag(*req.Tag); err != nil {
			return "", err
		}
		tag = *req.Tag
	}
	timeout := e.cfg.MaxTimeout
	if req.Timeout != nil {
		if *req.Timeout <= 0 {
			return "", errdefs.InvalidArgument("timeout must be a positive number of seconds")
		}
		timeout = min(int(*req.Timeout), e.cfg.MaxTimeout)
	}
	var work func(ctx context.Context) (string, error)
	switch {
	case strings.HasPrefix(url, UploadScheme):
		f, err := e.File(ctx, account, strings.TrimPrefix(url, UploadScheme))
		if err != nil {
			return "", err
		}
		if ri := e.registryImport; ri != nil {
			// The registry package also reads docker-save and OCI layout archives.
			work = func(ctx context.Context) (string, error) { return ri(ctx, e, account, req) }
		} else {
			work = func(ctx context.Context) (string, error) { return e.importArchive(ctx, account, f) }
		}
	default:
		if e.registryImport == nil {
			return "", errdefs.InvalidArgument("cannot import %q: this server imports uploaded archives (upload://<file uuid>) only", url)
		}
		ri := e.registryImport
		work = func(ctx context.Context) (string, error) { return ri(ctx, e, account, req) }
	}
	if err := e.admit(ctx, account); err != nil {
		return "", err
	}
	if err := e.checkDisk(); err != nil {
		return "", err
	}
	echo := oplog.ImageImportMetadata{Registry: oplog.ImportSource{URL: url}, Tag: req.Tag, Timeout: timeout}
	if c := req.Registry.Credentials; c != nil {
		echo.Registry.Credentials = &oplog.Credentials{Username: c.Username}
		if c.Password != "" {
			echo.Registry.Credentials.Password = "<MASKED>"
		}
	}
	mb, _ := json.Marshal(echo) // plain data: cannot fail
	o := store.Operation{UUID: newID(), Account: account, Kind: oplog.KindImageImport, Status: oplog.StatusPending,
		CreatedAt: e.now(), Metadata: string(mb)}
	err := e.startOp(ctx, o, func(ctx context.Context, op *op) outcome {
		ctx, cancel := context.WithTimeout(ctx, time.Duration(timeout)*time.Second)
		defer cancel()
		if err := op.to(ctx, opExecuting); err != nil {
			if out, ok := causeOutcome(ctx, "import"); ok {
				return out
			}
			return failed(err.Error())
		}
		// The image the import commits is its result: the image and the
		// SUCCESS (with the tag) are one transaction.
		op.setResult(func(image string) outcome { return outcome{state: opSuccess, result: image, tag: tag} })
		wctx, stopWatch := e.watchImport(withProgress(ctx, e, o.UUID), e.activeOf(o.UUID))
		imID, err := work(wctx)
		var quota quotaExceeded
		quotaHit := errors.As(context.Cause(wctx), &quota)
		stopWatch()
		if out, ok := causeOutcome(ctx, "import"); ok {
			return out
		}
		switch {
		case quotaHit:
			return failed(quota.Error())
		case err != nil && ctx.Err() == context.DeadlineExceeded:
			return failed(fmt.Sprintf("import timed out after %d s: raise timeout or check the registry", timeout))
		case err != nil:
			return failed(err.Error())
		}
		// An image imported before (the registry's cache): this import
		// committed none, so it finishes here, tagging that image.
		return outcome{state: opSuccess, result: imID, tag: tag}
	})
	if err != nil {
		return "", err
	}
	return o.UUID, nil
}

// RegistryImporter imports from a registry for an account and returns the
// new image uuid. It is installed by the composition root.
type RegistryImporter func(ctx context.Context, e *Engine, account string, req ImportRequest) (string, error)

// SetRegistryImporter installs the registry importer.
func (e *Engine) SetRegistryImporter(ri RegistryImporter) { e.registryImport = ri }

type progressKey struct{}

type progressSink struct {
	e  *Engine
	op string
}

func withProgress(ctx context.Context, e *Engine, op string) context.Context {
	return context.WithValue(ctx, progressKey{}, &progressSink{e: e, op: op})
}

// Progress appends a progress event to the operation carried by ctx, if
// any. An import's result commit writes its completion event, after which
// followers stop reading: progress belongs before it.
func Progress(ctx context.Context, p oplog.EventDataProgress) {
	if s, ok := ctx.Value(progressKey{}).(*progressSink); ok {
		s.e.events.emit(ctx, s.op, 0, oplog.EventProgress, p)
	}
}

func (e *Engine) importArchive(ctx context.Context, account string, f File) (string, error) {
	src, err := os.Open(e.blobPath(f.SHA256))
	if err != nil {
		return "", err
	}
	defer src.Close()
	return e.NewBaseImage(ctx, account, func(dir string) error {
		Progress(ctx, oplog.EventDataProgress{Phase: "extract", Total: f.Size, Unit: "bytes"})
		// Images carry no device nodes: the sandbox provides /dev.
		st, err := archive.ApplyTar(ctx, src, dir, archive.Options{DropDevices: true})
		if err == nil {
			Progress(ctx, oplog.EventDataProgress{Phase: "extract", Done: f.Size, Total: f.Size, Unit: "bytes"})
			if st.Devices > 0 {
				Progress(ctx, oplog.EventDataProgress{Phase: "devices", Done: int64(st.Devices), Total: int64(st.Devices), Unit: "device nodes",
					Message: fmt.Sprintf("dropped %d device node(s) from the root filesystem (device nodes are never created in images; the sandbox provides /dev)", st.Devices)})
			}
		}
		return err
	})
}

// NewBaseImage creates a parentless image whose single layer fill writes
// into an empty directory. The layer is durable before the image is visible.
func (e *Engine) NewBaseImage(ctx context.Context, account string, fill func(dir string) error) (string, error) {
	return e.NewImage(ctx, account, "", fill)
}

// NewImage creates an image on top of parent ("" for a base image) with one
// new layer written by fill.
func (e *Engine) NewImage(ctx context.Context, account, parent string, fill func(dir string) error) (string, error) {
	depth := 1
	if parent != "" {
		p, err := e.st.Image(ctx, account, parent)
		if err != nil {
			return "", err
		}
		depth = p.Depth + 1
		// The new image's chain runs through parent: keep it until the
		// image is recorded, even if parent is deleted meanwhile.
		l, err := e.leaseImage(p.UUID, "", false)
		if err != nil {
			return "", err
		}
		defer l.Release()
	}
	dir, err := e.stagingDir(ctx)
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o755); err != nil {
		return "", err
	}
	if err := fill(dir); err != nil {
		return "", err
	}
	im := store.Image{UUID: newID(), Account: account, Parent: parent, Layer: newLayerID(), Depth: depth, LayerBytes: dirBytes(dir), CreatedAt: e.now()}
	if err := e.checkImportQuota(ctx, account, im.LayerBytes); err != nil {
		return "", err
	}
	if err := e.commitLayer(ctx, dir, im); err != nil {
		return "", err
	}
	return im.UUID, nil
}

// layersTmp is a staging directory on the layer store's filesystem (the
// home), so a finished layer moves into place with one rename. Recovery
// empties it.
func (e *Engine) layersTmp() string {
	return filepath.Join(e.cfg.Home, "tmp")
}
