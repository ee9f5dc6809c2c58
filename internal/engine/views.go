package engine

import (
	"context"
	"encoding/json"
	"strings"
	"time"

	"github.com/arborsh/arbor/client/apitypes"
	"github.com/arborsh/arbor/internal/errdefs"
	"github.com/arborsh/arbor/internal/store"
)

// ImageView renders an image row in wire form.
func ImageView(im store.Image) apitypes.Image {
	v := apitypes.Image{UUID: im.UUID, CreatedAt: apitypes.Timestamp(im.CreatedAt), Depth: im.Depth, LayerBytes: im.LayerBytes}
	if im.Tag != "" {
		t := im.Tag
		v.Tag = &t
	}
	if im.Operation != "" {
		o := im.Operation
		v.OperationUUID = &o
	}
	if im.Parent != "" {
		p := im.Parent
		v.ParentUUID = &p
	}
	return v
}

func strPtr(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// SummaryView renders an operation row as an OperationSummary.
func SummaryView(o store.Operation) apitypes.OperationSummary {
	end := o.FinishedAt
	if end.IsZero() {
		end = time.Now()
	}
	var d float64
	if !o.StartedAt.IsZero() {
		d = end.Sub(o.CreatedAt).Seconds()
	}
	if apitypes.IsTerminal(o.Status) {
		d = o.FinishedAt.Sub(o.CreatedAt).Seconds()
	}
	return apitypes.OperationSummary{
		UUID: o.UUID, Kind: o.Kind, Status: o.Status, Error: strPtr(o.Error), CreatedAt: apitypes.Timestamp(o.CreatedAt),
		Duration: max(d, 0), ImageSize: o.ImageSize, ConsumedCPU: o.CPUSeconds, ConsumedMemory: o.MaxRSSBytes,
		ImageUUID: strPtr(o.ImageUUID), ResultImageUUID: strPtr(o.ResultImageUUID),
	}
}

// OperationView renders an operation row as an OperationResponse.
func OperationView(o store.Operation) apitypes.OperationResponse {
	r := apitypes.OperationResponse{OperationSummary: SummaryView(o), Metadata: json.RawMessage(o.Metadata)}
	r.Result = apitypes.OperationResult{Image: strPtr(o.ResultImageUUID), Tag: strPtr(o.ResultTag)}
	if o.Kind == apitypes.KindImageImport && o.ImageUUID == "" {
		r.ImageUUID = nil
	}
	return r
}

// Operation returns account's operation.
func (e *Engine) Operation(ctx context.Context, account, id string) (store.Operation, error) {
	if !IsUUID(id) {
		return store.Operation{}, errdefs.InvalidArgument("%q is not an operation UUID", id)
	}
	return e.st.Operation(ctx, account, strings.ToLower(id))
}

// ListOperations lists account's operations.
func (e *Engine) ListOperations(ctx context.Context, f store.OperationFilter) ([]store.Operation, error) {
	return e.st.ListOperations(ctx, f)
}

// WaitOperation blocks until op is terminal or ctx ends, and returns it.
func (e *Engine) WaitOperation(ctx context.Context, account, op string) (store.Operation, error) {
	err := e.FollowEvents(ctx, account, op, FollowOptions{After: -1, Follow: true}, func(Event) error { return nil })
	if err != nil {
		return store.Operation{}, err
	}
	return e.Operation(ctx, account, op)
}
