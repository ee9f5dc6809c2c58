package api

import (
	"net/url"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestParseTime(t *testing.T) {
	now := time.Date(2026, 6, 8, 20, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Time
	}{
		{"", time.Time{}},
		{"15m", now.Add(-15 * time.Minute)},
		{"2h", now.Add(-2 * time.Hour)},
		{"3d", now.Add(-72 * time.Hour)},
		{"1w", now.Add(-7 * 24 * time.Hour)},
		{"3600s", now.Add(-time.Hour)},
		{"3600", now.Add(-time.Hour)},
		{"1.5h", now.Add(-90 * time.Minute)},
		{"1h30m", now.Add(-90 * time.Minute)},
		{"2026-06-08T19:00:00Z", now.Add(-time.Hour)},
		{"2026-06-08T21:00:00+02:00", now.Add(-time.Hour)},
		{"2026-06-08T21:00:00 02:00", now.Add(-time.Hour)}, // "+" decoded as a space
		{"2026-06-08T19:00:00.123456789Z", now.Add(-time.Hour + 123456789)},
		{"2026-06-08T19:00:00", now.Add(-time.Hour)},
		{"2026-06-08T19:00:00.5", now.Add(-time.Hour + 500*time.Millisecond)},
		{"2026-06-08 19:00:00", now.Add(-time.Hour)},
		{"2026-06-08", now.Add(-20 * time.Hour)},
	} {
		got, err := parseTime("since", tc.in, now)
		if err != nil || !got.Equal(tc.want) {
			t.Errorf("parseTime(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"yesterday", "-5", "5y", "2026-13-01", "12:00"} {
		if _, err := parseTime("since", bad, now); err == nil {
			t.Errorf("parseTime(%q) succeeded, want an error", bad)
		}
	}
}

func TestPage(t *testing.T) {
	for _, tc := range []struct {
		q             string
		limit, offset int
		ok            bool
	}{
		{"", 100, 0, true}, {"limit=1", 1, 0, true}, {"limit=1000&offset=5", 1000, 5, true}, {"limit=&offset=", 100, 0, true},
		{"limit=0", 0, 0, false}, {"limit=1001", 0, 0, false}, {"limit=-1", 0, 0, false}, {"limit=x", 0, 0, false},
		{"offset=-1", 0, 0, false}, {"offset=1.5", 0, 0, false},
	} {
		q, _ := url.ParseQuery(tc.q)
		l, o, err := page(q)
		if (err == nil) != tc.ok || (tc.ok && (l != tc.limit || o != tc.offset)) {
			t.Errorf("page(%q) = %d, %d, %v; want %d, %d, ok=%v", tc.q, l, o, err, tc.limit, tc.offset, tc.ok)
		}
	}
}

func TestLsMode(t *testing.T) {
	for m, want := range map[uint32]string{
		unix.S_IFDIR | 0o755:                 "drwxr-xr-x",
		unix.S_IFREG | 0o644:                 "-rw-r--r--",
		unix.S_IFLNK | 0o777:                 "lrwxrwxrwx",
		unix.S_IFREG | unix.S_ISUID | 0o755:  "-rwsr-xr-x",
		unix.S_IFREG | unix.S_ISUID | 0o644:  "-rwSr--r--",
		unix.S_IFDIR | unix.S_ISVTX | 0o777:  "drwxrwxrwt",
		unix.S_IFDIR | unix.S_ISGID | 0o2750: "drwxr-s---",
		unix.S_IFCHR | 0o666:                 "crw-rw-rw-",
		unix.S_IFIFO | 0o600:                 "prw-------",
		unix.S_IFSOCK | 0o755:                "srwxr-xr-x",
	} {
		if got := lsMode(m); got != want {
			t.Errorf("lsMode(%o) = %s, want %s", m, got, want)
		}
	}
}
