package bench

import (
	"strings"
	"testing"
)

// TestTableSaysWhyWarmIsMissing: a report without warm figures says in the
// time-to-result table and in the targets why the pool was off.
func TestTableSaysWhyWarmIsMissing(t *testing.T) {
	const why = "off: no static init binary: this arbor is dynamically linked"
	r := Report{TimeToResult: []TimeToResult{{Runtime: "runsc"}}}
	r.Setup.WarmPool = why
	r.Targets = targets(&r)
	var b strings.Builder
	if err := WriteTable(&b, r); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"warm: not measured: warm pool " + why, "n/a (warm pool " + why + ")"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
}
