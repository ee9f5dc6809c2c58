// Package duration is the one grammar of durations that people type into
// arbor's flags and config file: the CLI's duration flags (--timeout,
// --ttl, serve's --shutdown-timeout, ...) and the daemon's retention TTLs
// (--image-ttl and its siblings, which the engine parses) all read them
// with [Parse], so they accept the same strings. It depends on nothing of
// arbor's.
package duration

import (
	"errors"
	"math"
	"strconv"
	"strings"
	"time"
)

// ErrSyntax is the error of a string that is no duration in any form.
var ErrSyntax = errors.New("not a duration")

// ErrRange is the error of a number of seconds, days or weeks beyond a
// time.Duration (about 292 years). A Go duration that long is ErrSyntax:
// package time does not tell the two apart.
var ErrRange = errors.New("duration out of range")

// Parse reads a duration written as a number of seconds ("30", "1.5",
// "-1"), in Go's syntax ("90s", "5m", "1h30m") or as days or weeks ("7d",
// "1.5d", "2w"). Surrounding space is ignored. The sign is kept: callers
// decide what zero and negative durations mean. The error is [ErrSyntax]
// or [ErrRange], for callers to wrap with the flag's name and forms.
func Parse(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	unit := time.Second
	num := s
	if n, ok := strings.CutSuffix(s, "d"); ok {
		unit, num = 24*time.Hour, n
	} else if n, ok := strings.CutSuffix(s, "w"); ok {
		unit, num = 7*24*time.Hour, n
	}
	if v, err := strconv.ParseFloat(num, 64); err == nil {
		return scale(v, unit)
	} else if ne, ok := err.(*strconv.NumError); ok && ne.Err == strconv.ErrRange {
		return 0, ErrRange
	}
	if unit != time.Second {
		return 0, ErrSyntax // "xd", "1hd": days and weeks take a plain number
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		// Also a Go duration past 292 years: time reports overflow as
		// "invalid duration" too, and nobody means one.
		return 0, ErrSyntax
	}
	return d, nil
}

// scale returns v units, or ErrRange/ErrSyntax for NaN, infinities and
// values beyond a time.Duration.
func scale(v float64, unit time.Duration) (time.Duration, error) {
	if math.IsNaN(v) {
		return 0, ErrSyntax
	}
	ns := v * float64(unit)
	if math.IsInf(ns, 0) || math.Abs(ns) >= math.MaxInt64 {
		return 0, ErrRange
	}
	return time.Duration(ns), nil
}
