package api_test

import (
	"fmt"
	"net/http"
	"testing"
)

// TestDisallowedRuntimeIs403: a run asking for a runtime the operator has
// not allowed is refused with 403 and the setting to change.
func TestDisallowedRuntimeIs403(t *testing.T) {
	d := sharedDaemon(t) // default runtime runc, nothing else allowed
	body := fmt.Sprintf(`{"command":"true","image":%q,"disposable":true,"runtime":"crun"}`, d.base)
	r := d.send(t, http.MethodPost, "/v1/instances", body)
	wantError(t, r, http.StatusForbidden, "--allow-runtime crun")
}
