package apitypes

// CheckpointResponse answers POST /v1/operations/{id}/checkpoint (an arbor
// extension): the image holding the instance's files at the checkpoint,
// with its memory checkpoint kept alongside for restores.
type CheckpointResponse struct {
	Image string `json:"image"`
	// CheckpointBytes is the kept memory checkpoint's size on disk (also
	// on the image, in df, and in the account's storage quota).
	CheckpointBytes int64 `json:"checkpoint_bytes"`
}

// RestoreRequest is the body of POST /v1/images/{id}/restore (an arbor
// extension): start Count running instances from the image's checkpoint.
type RestoreRequest struct {
	// Count is how many instances to start: 1 to MaxForks (default 1).
	Count int `json:"count,omitempty"`
}

// RestoreResponse answers a restore: the new instances' operation ids,
// each continuing the checkpointed instance's main process (spid 1).
type RestoreResponse struct {
	Operations []string `json:"operations"`
}
