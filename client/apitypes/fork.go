package apitypes

// ForkRequest is the body of POST /v1/operations/{id}/fork (an arbor
// extension): branch a running instance, memory and all, into Count new
// running instances.
type ForkRequest struct {
	// Count is how many copies to start: 1 to MaxForks (default 1).
	Count int `json:"count,omitempty"`
	// PauseParent leaves the forked instance stopped at the fork point
	// (nothing in it runs, its timeout still counts) until a CONT signal
	// to its main process (spid 1) resumes it.
	PauseParent bool `json:"pause_parent,omitempty"`
}

// MaxForks bounds ForkRequest.Count.
const MaxForks = 16

// ForkResponse answers a fork: the image of the filesystem at the fork
// point (every copy's later snapshot descends from it) and the copies'
// operation ids, each a running instance (spid 1 continues the parent's
// main process) once its operation is EXECUTING.
type ForkResponse struct {
	Image      string   `json:"image"`
	Operations []string `json:"operations"`
	// CheckpointBytes is the size of the memory checkpoint the copies were
	// restored from (the instance's memory in use, plus a little kernel
	// state); each copy holds that much memory of its own.
	CheckpointBytes int64 `json:"checkpoint_bytes"`
}
