// Package errdefs defines the small set of error classes used across arbor.
//
// Code wraps a class with context using fmt.Errorf("...: %w", errdefs.ErrNotFound)
// or with the helpers below; the HTTP layer maps classes to status codes in one
// place (api.writeError) and the Go client maps them back.
package errdefs

import (
	"errors"
	"fmt"
)

// The error classes. Each maps to exactly one HTTP status.
var (
	ErrInvalidArgument    = errors.New("invalid argument")    // 400
	ErrUnauthorized       = errors.New("unauthorized")        // 401
	ErrForbidden          = errors.New("forbidden")           // 403
	ErrNotFound           = errors.New("not found")           // 404
	ErrConflict           = errors.New("conflict")            // 409
	ErrFailedPrecondition = errors.New("failed precondition") // 409
	ErrTooEarly           = errors.New("too early")           // 425
	ErrTooLarge           = errors.New("too large")           // 413
	ErrResourceExhausted  = errors.New("resource exhausted")  // 429
	ErrUnavailable        = errors.New("unavailable")         // 503
	// ErrInsufficientStorage: the host's disk, not the caller's quota, is
	// (nearly) full; retrying soon does not help until an operator frees
	// space, so it is not 429 or 503 (which clients replay).
	ErrInsufficientStorage = errors.New("insufficient storage") // 507
	// An account's storage quota used up is ErrForbidden (403): waiting
	// does not free it, and 429 would have clients replay the request (the
	// ConTree clients replay 429s, whole uploads included).
)

// classError carries a user-facing message and a class. Its Error() is the
// message alone so API responses read naturally ("image not found").
type classError struct {
	class error
	msg   string
}

func (e *classError) Error() string { return e.msg }
func (e *classError) Unwrap() error { return e.class }

func newf(class error, format string, args ...any) error {
	return &classError{class: class, msg: fmt.Sprintf(format, args...)}
}

// InvalidArgument returns an error of class ErrInvalidArgument with the formatted message.
func InvalidArgument(format string, args ...any) error {
	return newf(ErrInvalidArgument, format, args...)
}

// NotFound returns an error of class ErrNotFound with the formatted message.
func NotFound(format string, args ...any) error { return newf(ErrNotFound, format, args...) }

// Conflict returns an error of class ErrConflict with the formatted message.
func Conflict(format string, args ...any) error { return newf(ErrConflict, format, args...) }

// FailedPrecondition returns an error of class ErrFailedPrecondition.
func FailedPrecondition(format string, args ...any) error {
	return newf(ErrFailedPrecondition, format, args...)
}

// TooEarly returns an error of class ErrTooEarly.
func TooEarly(format string, args ...any) error { return newf(ErrTooEarly, format, args...) }

// TooLarge returns an error of class ErrTooLarge.
func TooLarge(format string, args ...any) error { return newf(ErrTooLarge, format, args...) }

// ResourceExhausted returns an error of class ErrResourceExhausted.
func ResourceExhausted(format string, args ...any) error {
	return newf(ErrResourceExhausted, format, args...)
}

// Unauthorized returns an error of class ErrUnauthorized.
func Unauthorized(format string, args ...any) error { return newf(ErrUnauthorized, format, args...) }

// Forbidden returns an error of class ErrForbidden.
func Forbidden(format string, args ...any) error { return newf(ErrForbidden, format, args...) }

// Unavailable returns an error of class ErrUnavailable.
func Unavailable(format string, args ...any) error { return newf(ErrUnavailable, format, args...) }

// InsufficientStorage returns an error of class ErrInsufficientStorage.
func InsufficientStorage(format string, args ...any) error {
	return newf(ErrInsufficientStorage, format, args...)
}

// IsNotFound reports whether err is of class ErrNotFound.
func IsNotFound(err error) bool { return errors.Is(err, ErrNotFound) }

// IsInvalidArgument reports whether err is of class ErrInvalidArgument.
func IsInvalidArgument(err error) bool { return errors.Is(err, ErrInvalidArgument) }

// IsConflict reports whether err is of class ErrConflict or ErrFailedPrecondition.
func IsConflict(err error) bool {
	return errors.Is(err, ErrConflict) || errors.Is(err, ErrFailedPrecondition)
}
