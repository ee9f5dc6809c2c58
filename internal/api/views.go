package api

import (
	"encoding/json"
	"time"

	"github.com/arborsh/arbor/client/apitypes"
	"github.com/arborsh/arbor/internal/engine"
)

// The engine's types in wire form.

// imageView renders an image in wire form.
func imageView(im engine.Image) apitypes.Image {
	v := apitypes.Image{UUID: im.UUID, CreatedAt: apitypes.Timestamp(im.CreatedAt), Depth: im.Depth, LayerBytes: im.LayerBytes, CheckpointBytes: im.CheckpointBytes}
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

// summaryView renders an operation as an OperationSummary.
func summaryView(o engine.Operation) apitypes.OperationSummary {
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
		ImageUUID: strPtr(o.ImageUUID), ResultImageUUID: strPtr(o.ResultImageUUID), QueuePosition: o.QueuePosition,
	}
}

// operationView renders an operation as an OperationResponse.
func operationView(o engine.Operation) apitypes.OperationResponse {
	r := apitypes.OperationResponse{OperationSummary: summaryView(o), Metadata: json.RawMessage(o.Metadata)}
	r.Result = apitypes.OperationResult{Image: strPtr(o.ResultImageUUID), Tag: strPtr(o.ResultTag)}
	if o.Kind == apitypes.KindImageImport && o.ImageUUID == "" {
		r.ImageUUID = nil
	}
	return r
}
