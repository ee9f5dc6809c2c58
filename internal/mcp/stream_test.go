package mcp

import (
	"bytes"
	"fmt"
	"testing"
)

// TestStreamTail: a stream kept by streamTail clips as the whole stream
// does, however it arrives, while holding at most 2 × max bytes.
func TestStreamTail(t *testing.T) {
	var whole []byte
	for i := range 5000 {
		whole = append(whole, fmt.Sprintf("line %d é\n", i)...)
	}
	for _, tc := range []struct{ max, n, chunk int }{
		{100, 50, 7}, {100, 100, 100}, {100, 101, 1}, {100, 5000, 13}, {8000, 60000, 4096}, {8000, len(whole), 65536},
	} {
		t.Run(fmt.Sprintf("max%d_n%d_chunk%d", tc.max, tc.n, tc.chunk), func(t *testing.T) {
			b := whole[:tc.n]
			s := &streamTail{max: tc.max}
			for rest := b; len(rest) > 0; {
				k := min(tc.chunk, len(rest))
				s.write(rest[:k])
				rest = rest[k:]
				if len(s.first) > tc.max || len(s.last) > tc.max {
					t.Fatalf("holds %d + %d bytes, max %d", len(s.first), len(s.last), tc.max)
				}
			}
			got, gcut := s.clip()
			want, wcut := clip(b, tc.max)
			if got != want || gcut != wcut || s.n != len(b) {
				t.Errorf("clip = %q (%v, n %d), want %q (%v, n %d)", got, gcut, s.n, want, wcut, len(b))
			}
		})
	}
}

// TestUntilWatch: the text is found within a chunk and across chunks, in
// any split, and not before it is complete.
func TestUntilWatch(t *testing.T) {
	stream := []byte("noise >>> ready <<< tail")
	for split := 1; split <= len(stream); split++ {
		u := &untilWatch{until: "ready"}
		found := -1
		for i := 0; i < len(stream); i += split {
			end := min(i+split, len(stream))
			if u.saw(stream[i:end]) && found < 0 {
				found = end
			}
		}
		if at := bytes.Index(stream, []byte("ready")) + len("ready"); found < at || found >= at+split {
			t.Errorf("chunks of %d: found at byte %d, want the chunk that ends the text (byte %d)", split, found, at)
		}
	}
	if (&untilWatch{}).saw([]byte("anything")) {
		t.Error("an empty until matched")
	}
}
