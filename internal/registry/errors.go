package registry

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/arborsh/arbor/internal/errdefs"
)

// remoteError turns an error from talking to the registry of ref into one
// of arbor's error classes with a message that says what to do. Errors
// that already carry a class, and cancellation, pass through.
func remoteError(err error, ref name.Reference, withCreds bool) error {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || hasClass(err) {
		return err
	}
	reg := registryName(ref)
	var terr *transport.Error
	if errors.As(err, &terr) {
		codes := make([]string, 0, len(terr.Errors))
		for _, d := range terr.Errors {
			codes = append(codes, string(d.Code))
		}
		has := func(c transport.ErrorCode) bool {
			for _, x := range terr.Errors {
				if x.Code == c {
					return true
				}
			}
			return false
		}
		detail := fmt.Sprintf("HTTP %d", terr.StatusCode)
		if len(codes) > 0 {
			detail += " " + strings.Join(codes, ", ")
		}
		switch {
		case terr.StatusCode == http.StatusUnauthorized || has(transport.UnauthorizedErrorCode):
			if withCreds {
				return errdefs.Unauthorized("registry %s rejected the credentials for %s (%s): check the user name and the password or token", reg, ref, detail)
			}
			return errdefs.Unauthorized("registry %s refused an anonymous pull of %s (%s): the repository does not exist or needs credentials (registry.credentials)", reg, ref, detail)
		case terr.StatusCode == http.StatusForbidden || has(transport.DeniedErrorCode):
			return errdefs.Forbidden("registry %s denied access to %s (%s): the credentials lack pull permission", reg, ref, detail)
		case terr.StatusCode == http.StatusNotFound || has(transport.ManifestUnknownErrorCode) || has(transport.NameUnknownErrorCode) || has(transport.BlobUnknownErrorCode):
			return errdefs.NotFound("%s not found in registry %s (%s): check the repository, tag or digest", ref, reg, detail)
		case terr.StatusCode == http.StatusTooManyRequests || has(transport.TooManyRequestsErrorCode):
			return errdefs.ResourceExhausted("registry %s is rate-limiting pulls of %s (%s): retry later or pass credentials", reg, ref, detail)
		case terr.StatusCode >= 500:
			return errdefs.Unavailable("registry %s failed while serving %s (%s): retry later", reg, ref, detail)
		}
		return errdefs.InvalidArgument("registry %s refused the request for %s: %v", reg, ref, err)
	}
	var dnsErr *net.DNSError
	var certErr *tls.CertificateVerificationError
	var unknownAuth x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var recordErr tls.RecordHeaderError
	var opErr *net.OpError
	switch {
	case errors.As(err, &dnsErr):
		return errdefs.Unavailable("cannot resolve the registry host %s: %v", reg, dnsErr)
	case errors.As(err, &certErr), errors.As(err, &unknownAuth), errors.As(err, &hostErr):
		return errdefs.Unavailable("registry %s presented a certificate this server does not trust: %v", reg, err)
	case errors.As(err, &recordErr):
		return errdefs.Unavailable("registry %s does not speak HTTPS (%v): plain HTTP is used only for registries on loopback addresses", reg, err)
	case errors.As(err, &opErr):
		return errdefs.Unavailable("cannot reach registry %s: %v; check the host, the port and that the registry is running", reg, opErr)
	}
	return fmt.Errorf("registry %s, %s: %w", reg, ref, err)
}

// hasClass reports whether err already carries an errdefs class.
func hasClass(err error) bool {
	for _, c := range []error{errdefs.ErrInvalidArgument, errdefs.ErrUnauthorized, errdefs.ErrForbidden, errdefs.ErrNotFound,
		errdefs.ErrConflict, errdefs.ErrFailedPrecondition, errdefs.ErrTooLarge, errdefs.ErrResourceExhausted, errdefs.ErrUnavailable} {
		if errors.Is(err, c) {
			return true
		}
	}
	return false
}

// registryName is the registry as users write it (docker.io, not
// index.docker.io).
func registryName(ref name.Reference) string {
	r := ref.Context().RegistryStr()
	if r == name.DefaultRegistry {
		return "docker.io"
	}
	return r
}
