package engine

import (
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/arborsh/arbor/internal/errdefs"
	"github.com/dustin/go-humanize"
)

// Uploads land on the home's filesystem and count in their account's
// storage, so they are held to the same bounds as what runs write: under
// the disk reserve an upload is refused before a byte is read (507), and
// while it streams it stops as soon as it would take the account past its
// quota (403) or the free space under half the reserve (507), with nothing
// kept. A run's watcher polls its upper directory; an upload counts its
// own bytes as they arrive, so it needs no polling.

// uploadDiskCheck is the most an upload writes between two looks at the
// filesystem's free space (a statfs): often enough that what others write
// meanwhile cannot take the space far under half the reserve, which is at
// least 512 MiB by default.
const uploadDiskCheck = 4 << 20

// uploadRoom bounds one upload: an io.Writer beside the staging file
// that fails the copy once the upload outgrows the account's quota or
// the disk fills to half its reserve. err keeps the reason.
type uploadRoom struct {
	e       *Engine
	quota   int64 // bytes left of the account's quota; -1: no quota
	written int64
	disk    int64 // bytes it may write before it looks at the free space again
	err     error
}

// newUploadRoom admits an upload for account (under the disk reserve: a
// 507; quota used up: a 403) and returns its bound.
func (e *Engine) newUploadRoom(ctx context.Context, account string) (*uploadRoom, error) {
	if err := e.checkDisk(); err != nil {
		return nil, err
	}
	if err := e.checkStorage(ctx, account); err != nil {
		return nil, err
	}
	left, limited, err := e.quotaLeft(ctx, account, nil)
	if err != nil {
		return nil, err
	}
	if !limited {
		left = -1
	}
	return &uploadRoom{e: e, quota: left}, nil
}

var errUploadRoom = errors.New("upload out of room")

func (u *uploadRoom) Write(p []byte) (int, error) {
	n := int64(len(p))
	if u.quota >= 0 && u.written+n > u.quota {
		u.err = errdefs.Forbidden("the upload is larger than the %d bytes left of the account's storage quota (%d bytes, --max-storage-bytes); nothing was kept: delete images (arbor rmi) or ask for a larger quota",
			u.quota, u.e.cfg.MaxStorageBytes)
		return 0, errUploadRoom
	}
	if n > u.disk {
		// Look again: what others wrote or freed meanwhile counts too.
		avail, size, err := u.e.diskSpace()
		if err != nil {
			u.disk = math.MaxInt64 // cannot tell: the quota still bounds it
		} else if reserve := u.e.diskReserve(size); reserve > 0 {
			u.disk = avail - reserve/2
			if n > u.disk {
				u.err = errdefs.InsufficientStorage("the layer store's filesystem (%s) would fill up with this upload: %s free, and half its reserve of %s (--disk-reserve) stays free; nothing was kept: free space (arbor rmi, arbor gc) or grow the filesystem, then upload again",
					u.e.cfg.Home, humanize.IBytes(uint64(avail)), humanize.IBytes(uint64(reserve)))
				return 0, errUploadRoom
			}
			u.disk = min(u.disk, uploadDiskCheck) // look again after this much
		} else {
			u.disk = math.MaxInt64
		}
	}
	u.disk -= n
	u.written += n
	return len(p), nil
}

// failed returns the reason an upload that stopped after n bytes with
// err stopped: the room's, or err's.
func (u *uploadRoom) failed(n int64, err error) error {
	if u.err != nil {
		return u.err
	}
	return fmt.Errorf("upload interrupted after %d bytes: %w", n, err)
}
