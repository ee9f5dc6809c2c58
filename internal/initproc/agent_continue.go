package initproc

import "time"

// Continue readies the agent for another command in the same sandbox once
// Run has returned the last one's exit (the engine continues a sandbox in
// the next step of a chain; see continue.go for what the init makes fresh
// between commands). It waits up to wait for the last command's stdin feed
// to end (the caller has closed it), so none of it reaches the next
// command. It reports false when the agent cannot go on: the last run did
// not end with a reported exit, or its feed did not end in time. The
// caller then destroys the sandbox.
func (a *Agent) Continue(wait time.Duration) bool {
	if a.phase != phaseDone || !a.exited {
		return false
	}
	if a.fed != nil {
		select {
		case <-a.fed:
		case <-time.After(wait):
			return false
		}
	}
	a.phase, a.exited, a.fed = phaseIdle, false, nil
	a.pid.Store(0)
	return true
}
