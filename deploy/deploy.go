// Package deploy holds the files that install arbor on a host: the
// systemd unit, embedded so `arbor install-service` writes exactly the
// file in the repository.
package deploy

import _ "embed"

// SystemdUnit is arbor.service.
//
//go:embed arbor.service
var SystemdUnit string
