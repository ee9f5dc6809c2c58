package store

import "context"

// PassLocker is implemented by a [Metadata] that several nodes share
// (PostgreSQL): the engine's retention and collection passes then run on
// one node at a time, whichever takes the lock.
type PassLocker interface {
	// TryPassLock takes the pass lock unless another node holds it (ok
	// false, nothing to release). release ends the hold; a node that dies
	// loses it with its connection.
	TryPassLock(ctx context.Context) (release func(), ok bool, err error)
}
