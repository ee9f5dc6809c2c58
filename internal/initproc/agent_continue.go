package initproc

import (
	"errors"
	"fmt"
	"time"
)

// Continue readies the agent for another command in the same sandbox once
// Run has returned the last one's exit (the engine continues a sandbox in
// the next step of a chain). It waits up to wait for the last command's
// stdin feed to end (the caller has closed it), so none of it reaches the
// next command, and for the init to report the sandbox fresh (see
// continue.go). An error says why the agent cannot go on: the last run did
// not end with a reported exit, something did not end in time, or the
// init could not make the sandbox fresh. The caller then destroys the
// sandbox.
func (a *Agent) Continue(wait time.Duration) error {
	if a.phase != phaseDone || !a.exited {
		return errors.New("the last command did not end with a reported exit")
	}
	deadline := time.After(wait)
	if a.fed != nil {
		select {
		case <-a.fed:
		case <-deadline:
			return errors.New("the last command's stdin did not drain in time")
		}
	}
	a.phase = phaseFreshening
	type fresh struct {
		stale []byte
		err   error
	}
	ch := make(chan fresh, 1)
	go func() {
		_, p, err := a.next()
		ch <- fresh{p, err}
	}()
	select {
	case f := <-ch:
		if f.err != nil {
			return f.err
		}
		if len(f.stale) > 0 {
			return fmt.Errorf("%s", f.stale)
		}
	case <-deadline:
		// The reader goroutine ends when the sandbox is destroyed.
		return errors.New("the init did not report the sandbox fresh in time")
	}
	a.exited, a.fed = false, nil
	a.pid.Store(0)
	return nil
}
