package api

import (
	"math"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/arborsh/arbor/internal/engine"
	"github.com/arborsh/arbor/internal/errdefs"
)

// Query parsing is lenient in form (clients encode differently, §1.7) but
// strict in meaning: a value that cannot be understood is a 400 naming the
// parameter, never silently ignored.

const (
	defaultLimit = 100
	maxLimit     = 1000
)

// page parses limit (1..1000, default 100) and offset (>= 0, default 0).
func page(q url.Values) (limit, offset int, err error) {
	limit = defaultLimit
	if v := strings.TrimSpace(q.Get("limit")); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxLimit {
			return 0, 0, errdefs.InvalidArgument("limit must be between 1 and 1000")
		}
		limit = n
	}
	if v := strings.TrimSpace(q.Get("offset")); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return 0, 0, errdefs.InvalidArgument("offset must be an integer >= 0")
		}
		offset = n
	}
	return limit, offset, nil
}

// timeRange parses since and until.
func timeRange(q url.Values, now time.Time) (since, until time.Time, err error) {
	if since, err = parseTime("since", q.Get("since"), now); err != nil {
		return
	}
	until, err = parseTime("until", q.Get("until"), now)
	return
}

var relativeRE = regexp.MustCompile(`^(\d+(?:\.\d+)?)\s*([smhdw]?)$`)

var timeLayouts = []string{
	time.RFC3339Nano,
	"2006-01-02T15:04:05.999999999",
	"2006-01-02 15:04:05.999999999Z07:00",
	"2006-01-02 15:04:05.999999999",
	"2006-01-02T15:04Z07:00",
	"2006-01-02T15:04",
	"2006-01-02",
}

// parseTime accepts an RFC 3339 / ISO 8601 time with or without an offset
// (none means UTC), a relative duration before now ("15m", "2h", "3d", "1w",
// "3600s", or Go's "1h30m"), or a bare number of seconds before now. "" is
// the zero time (no bound).
func parseTime(name, v string, now time.Time) (time.Time, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return time.Time{}, nil
	}
	if m := relativeRE.FindStringSubmatch(strings.ToLower(v)); m != nil {
		n, _ := strconv.ParseFloat(m[1], 64)
		unit := map[string]time.Duration{"": time.Second, "s": time.Second, "m": time.Minute, "h": time.Hour,
			"d": 24 * time.Hour, "w": 7 * 24 * time.Hour}[m[2]]
		return now.Add(-time.Duration(n * float64(unit))), nil
	}
	if d, err := time.ParseDuration(v); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	// A "+" offset sent unencoded arrives as a space.
	if i := strings.LastIndexByte(v, ' '); i > 10 && strings.Count(v[i+1:], ":") == 1 {
		v = v[:i] + "+" + v[i+1:]
	}
	for _, layout := range timeLayouts {
		if t, err := time.Parse(layout, v); err == nil {
			return t, nil
		}
	}
	return time.Time{}, errdefs.InvalidArgument("%s %q is not a time: use RFC 3339 (2026-01-02T15:04:05Z), a duration before now (15m, 2h, 3d, 1w, 3600s) or seconds", name, v)
}

// flag parses a boolean query parameter: 1/true/yes/on or 0/false/no/off;
// absent or empty is false.
func flag(q url.Values, name string) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(q.Get(name))) {
	case "", "0", "false", "no", "off":
		return false, nil
	case "1", "true", "yes", "on":
		return true, nil
	}
	return false, errdefs.InvalidArgument("%s must be 1 or 0 (or true/false), not %q", name, q.Get(name))
}

// intParam parses an integer query parameter of at least lo; def if absent.
func intParam(q url.Values, name string, def, lo int) (int, error) {
	v := strings.TrimSpace(q.Get(name))
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo {
		return 0, errdefs.InvalidArgument("%s must be an integer >= %d, not %q", name, lo, v)
	}
	return n, nil
}

// uuidParam validates a UUID path or query value and lower-cases it.
func uuidParam(what, v string) (string, error) {
	if !engine.IsUUID(v) {
		return "", errdefs.InvalidArgument("%q is not a valid %s UUID (want the form 123e4567-e89b-12d3-a456-426614174000)", v, what)
	}
	return strings.ToLower(v), nil
}

// values returns the non-empty values of a repeatable key.
func values(q url.Values, name string) []string {
	var out []string
	for _, v := range q[name] {
		if v != "" {
			out = append(out, v)
		}
	}
	return out
}

// maxWait bounds a long poll (GET /v1/operations/{id}?wait=): under the
// idle timeouts of common proxies and load balancers (60 s), so a waiting
// request is not cut as idle.
const maxWait = 50 * time.Second

// waitParam parses the wait parameter of a long poll: a duration ("30s",
// "1m") or a number of seconds ("30", "0.5"); 0 when absent. Longer waits
// are cut to maxWait: the client asks again.
func waitParam(q url.Values) (time.Duration, error) {
	v := strings.TrimSpace(q.Get("wait"))
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		f, ferr := strconv.ParseFloat(v, 64)
		if ferr != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			return 0, errdefs.InvalidArgument("wait must be a duration such as 30s or a number of seconds, not %q", v)
		}
		d = time.Duration(min(f, maxWait.Seconds()) * float64(time.Second))
	}
	if d < 0 {
		return 0, errdefs.InvalidArgument("wait must not be negative (%q): give how long to wait for the operation to finish, such as 30s", v)
	}
	return min(d, maxWait), nil
}
