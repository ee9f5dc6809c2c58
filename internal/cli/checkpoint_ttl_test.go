package cli

import (
	"strings"
	"testing"
	"time"
)

// TestCheckpointTTLFlag: --checkpoint-ttl takes the retention TTLs (days,
// weeks, Go durations, off) and refuses anything else naming the flag.
func TestCheckpointTTLFlag(t *testing.T) {
	for in, want := range map[string]time.Duration{"3d": 72 * time.Hour, "2w": 14 * 24 * time.Hour, "90m": 90 * time.Minute, "off": 0} {
		var d time.Duration
		if err := (&ttlFlag{d: &d}).Set(in); err != nil || d != want {
			t.Errorf("--checkpoint-ttl %s: %v %v, want %v", in, d, err, want)
		}
	}
	var d time.Duration
	if err := (&ttlFlag{d: &d}).Set("soon"); err == nil || !strings.Contains(err.Error(), "--checkpoint-ttl") {
		t.Errorf("--checkpoint-ttl soon: %v, want an error naming the flag", err)
	}
}
