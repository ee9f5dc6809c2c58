package engine

import (
	"context"

	"github.com/arborsh/arbor/internal/store"
)

// syncRows adds the images of rows that other nodes made to this node's
// image graph, so that a report built from the graph (DiskUsage) counts
// every image of the cluster, whichever node answers.
func (e *Engine) syncRows(ctx context.Context, rows []store.Image) error {
	if e.cl == nil {
		return nil
	}
	for _, r := range rows {
		if err := e.syncImage(ctx, r.UUID); err != nil {
			return err
		}
	}
	return nil
}
