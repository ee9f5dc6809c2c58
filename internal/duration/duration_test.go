package duration

import (
	"errors"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		err  error
	}{
		{"30", 30 * time.Second, nil},
		{" 3600 ", time.Hour, nil},
		{"1.5", 1500 * time.Millisecond, nil},
		{"0", 0, nil},
		{"-1", -time.Second, nil},
		{"90s", 90 * time.Second, nil},
		{"1h30m", 90 * time.Minute, nil},
		{"-1s", -time.Second, nil},
		{"7d", 7 * 24 * time.Hour, nil},
		{"1.5d", 36 * time.Hour, nil},
		{"2w", 14 * 24 * time.Hour, nil},
		{"-2d", -48 * time.Hour, nil},
		{"", 0, ErrSyntax},
		{"soon", 0, ErrSyntax},
		{"xd", 0, ErrSyntax},
		{"1hd", 0, ErrSyntax},
		{"d", 0, ErrSyntax},
		{"3 h", 0, ErrSyntax},
		{"NaN", 0, ErrSyntax},
		{"1e300", 0, ErrRange},
		{"1e400", 0, ErrRange},
		{"-1e300", 0, ErrRange},
		{"inf", 0, ErrRange},
		{"1e12w", 0, ErrRange},
	} {
		got, err := Parse(tc.in)
		if tc.err != nil {
			if !errors.Is(err, tc.err) {
				t.Errorf("Parse(%q) = %v, %v; want error %v", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("Parse(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}
