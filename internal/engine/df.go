package engine

import (
	"context"
	"sort"

	"github.com/arborsh/arbor/internal/oplog"
)

// AccountDisk is what one account holds (arbor df).
type AccountDisk struct {
	Account      string
	Images       int // live images
	TaggedImages int
	// Layers are the distinct layer directories the account's images need
	// (their whole chains, squashed copies and deleted ancestors
	// included), and DiskBytes their recorded sizes, each layer once.
	Layers    int
	DiskBytes int64
	// SharedBytes is the part of DiskBytes in layers other accounts' images
	// need too (content-addressed import layers). AttributedBytes is
	// DiskBytes with each such layer split evenly among the accounts that
	// need it, so the accounts' AttributedBytes add up to the store's.
	SharedBytes     int64
	AttributedBytes int64
	// QuotaBytes is what the storage quota (MaxStorageBytes) counts:
	// layers of its undeleted rows, squashed copies, uploaded files and
	// export blobs.
	QuotaBytes int64
	// CheckpointBytes: the memory checkpoints kept with its images (part
	// of QuotaBytes, not of DiskBytes).
	CheckpointBytes int64
	// Pending are operations waiting for a slot, Running those holding
	// one (ASSIGNED or EXECUTING).
	Pending, Running int64
	Retention        Retention
}

// DiskReport is the layer store's use by account.
type DiskReport struct {
	Accounts []AccountDisk
	// Layers and Bytes: every layer directory a row records, each once.
	Layers int
	Bytes  int64
	// Limits that apply to every account.
	MaxStorageBytes int64
	MaxConcurrent   int
}

// DiskUsage reports account's use of the disk ("": every account with
// images or operations in flight).
func (e *Engine) DiskUsage(ctx context.Context, account string) (DiskReport, error) {
	rows, err := e.st.AllImages(ctx)
	if err != nil {
		return DiskReport{}, err
	}
	if err := e.syncRows(ctx, rows); err != nil {
		return DiskReport{}, err
	}
	tagged := map[string]bool{}
	for _, r := range rows {
		if r.Tag != "" && !r.Deleted && !r.Hidden {
			tagged[r.UUID] = true
		}
	}
	type acc struct {
		images, tagged int
		layers         map[string]bool
		seen           map[string]bool // rows whose chain is counted
	}
	by := map[string]*acc{}
	get := func(a string) *acc {
		if by[a] == nil {
			by[a] = &acc{layers: map[string]bool{}, seen: map[string]bool{}}
		}
		return by[a]
	}
	users := map[string]map[string]bool{} // layer → accounts that need it
	rep := DiskReport{MaxStorageBytes: e.cfg.MaxStorageBytes, MaxConcurrent: e.cfg.MaxConcurrentOps}
	e.mu.Lock()
	sizes := map[string]int64{}
	for u, n := range e.images {
		sizes[n.layer] = max(sizes[n.layer], n.bytes)
		if n.flat != "" {
			sizes[n.flat] = max(sizes[n.flat], n.flatBytes)
		}
		live := !n.deleted && !n.hidden
		if !live && e.leased[u] == 0 {
			continue
		}
		a := get(n.account)
		if live {
			a.images++
			if tagged[u] {
				a.tagged++
			}
		}
		for cur := u; cur != "" && !a.seen[cur]; {
			a.seen[cur] = true
			m := e.images[cur]
			if m == nil {
				break
			}
			for _, l := range []string{m.layer, m.flat} {
				if l == "" {
					continue
				}
				a.layers[l] = true
				if users[l] == nil {
					users[l] = map[string]bool{}
				}
				users[l][n.account] = true
			}
			cur = m.parent
		}
	}
	for _, a := range e.active {
		get(a.account)
	}
	e.mu.Unlock()
	for l := range users {
		rep.Layers++
		rep.Bytes += sizes[l]
	}
	if account != "" {
		get(account)
	}
	for name, a := range by {
		if account != "" && name != account {
			continue
		}
		d := AccountDisk{Account: name, Images: a.images, TaggedImages: a.tagged, Layers: len(a.layers), Retention: e.RetentionOf(name)}
		for l := range a.layers {
			d.DiskBytes += sizes[l]
			if k := int64(len(users[l])); k > 1 {
				d.SharedBytes += sizes[l]
				d.AttributedBytes += sizes[l] / k
			} else {
				d.AttributedBytes += sizes[l]
			}
		}
		if d.CheckpointBytes, err = e.accountCheckpointBytes(ctx, name); err != nil {
			return rep, err
		}
		if d.QuotaBytes, err = e.storedBytes(ctx, name); err != nil {
			return rep, err
		}
		st, _, err := e.st.OperationStats(ctx, name)
		if err != nil {
			return rep, err
		}
		d.Pending = st[oplog.StatusPending]
		d.Running = st[oplog.StatusAssigned] + st[oplog.StatusExecuting]
		rep.Accounts = append(rep.Accounts, d)
	}
	sort.Slice(rep.Accounts, func(i, j int) bool { return rep.Accounts[i].Account < rep.Accounts[j].Account })
	return rep, nil
}
