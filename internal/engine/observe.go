package engine

import "time"

// Observer is told what the engine does, for metrics. Its methods are
// called on the engine's paths (a finish, a commit), so they must be cheap
// and must not block or call back into the engine. internal/metrics
// implements it; nil (Config.Observer) observes nothing.
type Observer interface {
	// OperationFinished: an operation of kind (instance, image_import)
	// ended with status (SUCCESS, FAILED, CANCELLED) after elapsed since it
	// was accepted. runtime is the run's sandbox runtime ("" for imports
	// and operations failed at start-up).
	OperationFinished(kind, status, runtime string, elapsed time.Duration)
	// OperationExecuting: an operation started executing after waiting
	// this long since it was accepted (PENDING → EXECUTING).
	OperationExecuting(kind string, waited time.Duration)
	// Committed: an image with a layer of its own was recorded (a run's
	// result, an imported archive, each layer of a registry import); bytes
	// is its layer's size.
	Committed(bytes int64)
	// GarbageCollected: a collection ran and removed layers; err is its
	// error, if any.
	GarbageCollected(layers int, err error)
}

// nopObserver observes nothing.
type nopObserver struct{}

func (nopObserver) OperationFinished(string, string, string, time.Duration) {}
func (nopObserver) OperationExecuting(string, time.Duration)                {}
func (nopObserver) Committed(int64)                                         {}
func (nopObserver) GarbageCollected(int, error)                             {}
