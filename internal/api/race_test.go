//go:build race

package api_test

// raceEnabled: under the race detector sync.Pool drops what it is given
// (to shake out misuse), so pooled buffers are allocated again and again.
const raceEnabled = true
