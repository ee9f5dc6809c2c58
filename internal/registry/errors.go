package registry

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/arborsh/arbor/internal/errdefs"
)

// remoteError classifies err with the function remoteError and logs the
// errors whose message it hides from the client.
func (im *Importer) remoteError(ctx context.Context, err error, ref name.Reference, withCreds bool) error {
	out, hidden := remoteError(err, ref, withCreds)
	if hidden {
		im.log.WarnContext(ctx, "registry: pull failed", "ref", ref.String(), "err", err)
	}
	return out
}

// remoteError turns an error from talking to the registry of ref into one
// of arbor's error classes with a message that says what to do. Errors
// that already carry a class, and cancellation, pass through.
//
// Only answers that come from a registry (errors in the distribution API's
// format, or an authentication challenge) are told apart. A refused,
// closed or silent port, a TLS failure and an answer that is not a
// registry's all give one message (hidden is then true, and the caller
// logs err for the operator): otherwise the error would tell a client
// which ports of a host answer, and what.
func remoteError(err error, ref name.Reference, withCreds bool) (_ error, hidden bool) {
	var na *errAddrNotAllowed
	switch {
	case err == nil, errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err, false
	case errors.As(err, &na):
		return errdefs.Forbidden("%v", na), false
	case hasClass(err):
		return err, false
	}
	reg := registryName(ref)
	unreachable := errdefs.Unavailable("cannot pull %s: no registry answered at %s (the connection was refused, failed or timed out, TLS failed, or what answered is not an OCI registry); check the host, the port, that the registry is running and that it serves HTTPS with a certificate this server trusts (plain HTTP only on loopback)", ref, reg)
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
				return errdefs.Unauthorized("registry %s rejected the credentials for %s (%s): check the user name and the password or token", reg, ref, detail), false
			}
			return errdefs.Unauthorized("registry %s refused an anonymous pull of %s (%s): the repository does not exist or needs credentials (registry.credentials)", reg, ref, detail), false
		case len(codes) == 0:
			// An HTTP status without the registry's error body: whatever
			// answered may not be a registry at all.
			return unreachable, true
		case terr.StatusCode == http.StatusForbidden || has(transport.DeniedErrorCode):
			return errdefs.Forbidden("registry %s denied access to %s (%s): the credentials lack pull permission", reg, ref, detail), false
		case terr.StatusCode == http.StatusNotFound || has(transport.ManifestUnknownErrorCode) || has(transport.NameUnknownErrorCode) || has(transport.BlobUnknownErrorCode):
			return errdefs.NotFound("%s not found in registry %s (%s): check the repository, tag or digest", ref, reg, detail), false
		case terr.StatusCode == http.StatusTooManyRequests || has(transport.TooManyRequestsErrorCode):
			return errdefs.ResourceExhausted("registry %s is rate-limiting pulls of %s (%s): retry later or pass credentials", reg, ref, detail), false
		case terr.StatusCode >= 500:
			return errdefs.Unavailable("registry %s failed while serving %s (%s): retry later", reg, ref, detail), false
		default:
			return errdefs.InvalidArgument("registry %s refused the request for %s (%s)", reg, ref, detail), false
		}
	}
	var notReg errNotRegistry
	var urlErr *url.Error
	var opErr *net.OpError
	var dnsErr *net.DNSError
	var certErr *tls.CertificateVerificationError
	var unknownAuth x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var recordErr tls.RecordHeaderError
	if !errors.As(err, &notReg) && !errors.As(err, &urlErr) && !errors.As(err, &opErr) && !errors.As(err, &dnsErr) && !errors.As(err, &certErr) &&
		!errors.As(err, &unknownAuth) && !errors.As(err, &hostErr) && !errors.As(err, &recordErr) {
		return fmt.Errorf("registry %s, %s: %w", reg, ref, err), false // not from the network: a local failure
	}
	return unreachable, true
}

// errNotRegistry is an answer to a manifest request that is not even JSON.
type errNotRegistry struct{ mediaType string }

func (e errNotRegistry) Error() string {
	return fmt.Sprintf("the manifest is not JSON (media type %q): not a registry", e.mediaType)
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
