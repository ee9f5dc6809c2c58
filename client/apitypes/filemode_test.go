package apitypes

import (
	"encoding/json"
	"testing"
)

// TestFileModeRoundTrip: every mode decodes to itself from what
// MarshalJSON writes; "4755" (setuid 0755, written without a leading zero)
// is octal, not the decimal number 4755.
func TestFileModeRoundTrip(t *testing.T) {
	for _, m := range []FileMode{0, 0o644, 0o755, 0o4755, 0o2750, 0o1777, 0o7777} {
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		var got FileMode
		if err := json.Unmarshal(b, &got); err != nil || got != m {
			t.Errorf("%04o → %s → %04o, %v", uint32(m), b, uint32(got), err)
		}
	}
	var n FileMode
	if err := json.Unmarshal([]byte(`420`), &n); err != nil || n != 0o644 {
		t.Errorf("JSON integer 420 → %04o, %v; want 0644", uint32(n), err)
	}
}
