// Package deploy holds the files that install arbor on a host: the
// systemd units, embedded so `arbor install-service` writes exactly the
// files in the repository, and (not embedded) the Kubernetes manifests
// in kubernetes/.
package deploy

import _ "embed"

// SystemdUnit is arbor.service.
//
//go:embed arbor.service
var SystemdUnit string

// SystemdAPIUnit and SystemdWorkerUnit are the units of a scale-out
// deployment's API nodes and workers (arbor-api.service,
// arbor-worker.service).
var (
	//go:embed arbor-api.service
	SystemdAPIUnit string
	//go:embed arbor-worker.service
	SystemdWorkerUnit string
)
