package cli

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/arborsh/arbor/internal/duration"
	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"
)

// shortID is the first 8 characters of a UUID, which the CLI accepts back
// wherever it takes an image or operation.
func shortID(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// age renders an RFC 3339 timestamp as a time before now: "12s ago".
func age(ts string) string {
	t, err := time.Parse(time.RFC3339Nano, ts)
	if err != nil {
		return ts
	}
	d := time.Since(t)
	switch {
	case d < 0:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	}
	return fmt.Sprintf("%dd ago", int(d.Hours()/24))
}

// seconds renders a duration in seconds compactly: "0.21s", "3m05s".
func seconds(s float64) string {
	switch {
	case s < 60:
		return strconv.FormatFloat(s, 'f', 2, 64) + "s"
	case s < 3600:
		return fmt.Sprintf("%dm%02ds", int(s)/60, int(s)%60)
	}
	return fmt.Sprintf("%dh%02dm", int(s)/3600, int(s)%3600/60)
}

// humanBytes renders n bytes with a binary unit: "1.5 MiB".
func humanBytes(n int64) string {
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	units := []string{"KiB", "MiB", "GiB", "TiB", "PiB"}
	v := float64(n)
	i := -1
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	return fmt.Sprintf("%.1f %s", v, units[i])
}

// parseSeconds reads a positive duration given as seconds ("30", "1.5") or
// in Go syntax ("90s", "2m", "1h30m"), with "d" and "w" for days and weeks
// (duration.Parse, which the daemon's retention TTLs use too).
func parseSeconds(flag, s string) (float64, error) {
	s = strings.TrimSpace(s)
	d, err := duration.Parse(s)
	switch {
	case errors.Is(err, duration.ErrRange):
		return 0, fmt.Errorf("%s %q is out of range: use seconds (30) or a form like 90s, 5m, 2h, 7d", flag, s)
	case err != nil:
		return 0, fmt.Errorf("%s %q is not a duration: use seconds (30) or a form like 90s, 5m, 2h, 7d", flag, s)
	case d <= 0:
		return 0, fmt.Errorf("%s %q must be positive", flag, s)
	}
	return d.Seconds(), nil
}

// durationFlag is a time.Duration flag that, like parseSeconds, also takes
// a plain number of seconds (and days and weeks: duration.Parse), so
// `arbor serve --shutdown-timeout 60` and a config file's
// `shutdown-timeout = 60` mean a minute. Unlike
// parseSeconds it takes 0 and negative values, which some settings give a
// meaning (--gc-interval -1s: never).
type durationFlag time.Duration

// durationVar defines a durationFlag on fs.
func durationVar(fs *pflag.FlagSet, p *time.Duration, name string, def time.Duration, usage string) {
	*p = def
	fs.Var((*durationFlag)(p), name, usage)
	if def == 0 {
		fs.Lookup(name).DefValue = "0" // pflag shows no "(default 0s)" for its own durations only
	}
}

func (d *durationFlag) Set(s string) error {
	v, err := duration.Parse(s)
	switch {
	case errors.Is(err, duration.ErrRange):
		return errors.New("out of range: use seconds (60) or a duration such as 90s, 5m, 1h")
	case err != nil:
		return errors.New("not a duration: use seconds (60) or a duration such as 90s, 5m, 1h")
	}
	*d = durationFlag(v)
	return nil
}

func (d *durationFlag) String() string { return time.Duration(*d).String() }
func (d *durationFlag) Type() string   { return "duration" }

// newTable returns a tab-aligned writer for columns of output.
func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// shellQuote renders args as one shell command line.
func shellQuote(args []string) string {
	out := make([]string, len(args))
	for i, a := range args {
		if a != "" && !strings.ContainsAny(a, " \t\n'\"\\$`|&;<>()*?[]{}~!#") {
			out[i] = a
			continue
		}
		out[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(out, " ")
}

// oneLine shortens s to one line of at most n runes.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	r := []rune(s)
	if len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

// parseBytes reads a size: a number of bytes or one with a K, M, G or T
// suffix (powers of 1024; "MiB", "MB" and "m" are accepted alike).
func parseBytes(s string) (int64, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	t = strings.TrimSuffix(strings.TrimSuffix(t, "B"), "I")
	mult := int64(1)
	if n := len(t); n > 0 {
		if i := strings.IndexByte("KMGT", t[n-1]); i >= 0 {
			mult, t = int64(1)<<(10*(i+1)), t[:n-1]
		}
	}
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || v <= 0 || math.IsInf(v, 0) || v*float64(mult) > math.MaxInt64/2 {
		return 0, fmt.Errorf("%q is not a size: use bytes or a form like 512M or 2G", s)
	}
	return int64(v * float64(mult)), nil
}
