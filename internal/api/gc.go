package api

import (
	"net/http"

	"github.com/arborsh/arbor/client/apitypes"
	"github.com/arborsh/arbor/internal/engine"
	"github.com/arborsh/arbor/internal/errdefs"
)

// gc answers POST /v1/gc[?dry_run=1][&account=] (arbor extension): apply
// the retention policies now and collect, or with dry_run report what
// would go. A token of the default account collects every account unless
// it names one; any other token, its own account.
func (s *server) gc(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	dry, err := flag(q, "dry_run")
	if err != nil {
		return err
	}
	account := accountOf(r)
	if account == engine.DefaultAccount {
		account = q.Get("account")
	} else if named := q.Get("account"); named != "" && named != account {
		return errdefs.Forbidden("only tokens of the %q account may collect other accounts", engine.DefaultAccount)
	}
	rep, err := s.e.GC(r.Context(), engine.GCOptions{DryRun: dry, Account: account})
	if err != nil {
		return err
	}
	out := apitypes.GCResponse{DryRun: rep.DryRun, Images: make([]apitypes.GCImage, 0, len(rep.Images)), Layers: rep.Layers,
		Bytes: rep.Bytes + rep.ExportBytes + rep.UploadBytes + rep.CheckpointBytes, Checkpoints: rep.Checkpoints, CheckpointBytes: rep.CheckpointBytes, LayerBytes: rep.Bytes, ExportBlobs: rep.ExportBlobs, ExportBytes: rep.ExportBytes,
		Uploads: rep.Uploads, UploadBytes: rep.UploadBytes,
		ImageRows: rep.ImageRows, Operations: rep.Operations, Events: rep.Events}
	for _, im := range rep.Images {
		out.Images = append(out.Images, apitypes.GCImage{UUID: im.UUID, Account: im.Account, CreatedAt: apitypes.Timestamp(im.CreatedAt)})
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// df answers GET /v1/df[?all=1] (arbor extension): the caller's account's
// disk, images and operations in flight; with all (default account only),
// every account's.
func (s *server) df(w http.ResponseWriter, r *http.Request) error {
	all, err := flag(r.URL.Query(), "all")
	if err != nil {
		return err
	}
	account := accountOf(r)
	if all {
		if account != engine.DefaultAccount {
			return errdefs.Forbidden("only tokens of the %q account may see every account's usage", engine.DefaultAccount)
		}
		account = ""
	}
	rep, err := s.e.DiskUsage(r.Context(), account)
	if err != nil {
		return err
	}
	out := apitypes.DiskUsageResponse{Accounts: make([]apitypes.AccountDiskUsage, 0, len(rep.Accounts)), Layers: rep.Layers, Bytes: rep.Bytes,
		MaxStorageBytes: rep.MaxStorageBytes, MaxConcurrent: rep.MaxConcurrent}
	for _, a := range rep.Accounts {
		out.Accounts = append(out.Accounts, apitypes.AccountDiskUsage{Account: a.Account, Images: a.Images, TaggedImages: a.TaggedImages,
			Layers: a.Layers, DiskBytes: a.DiskBytes, SharedBytes: a.SharedBytes, AttributedBytes: a.AttributedBytes, QuotaBytes: a.QuotaBytes, CheckpointBytes: a.CheckpointBytes,
			Pending: a.Pending, Running: a.Running,
			ImageTTLSeconds: ttlSeconds(a.Retention.ImageTTL.Seconds()), OperationTTLSeconds: ttlSeconds(a.Retention.OperationTTL.Seconds()),
			UploadTTLSeconds: ttlSeconds(a.Retention.UploadTTL.Seconds())})
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func ttlSeconds(s float64) int64 { return max(int64(s), 0) }
