package runtime

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
)

// CheckpointFormat names what an image Checkpoint writes depends on:
// runsc's version line, a digest of its binary (builds from source all
// report VERSION_MISSING) and the global flags (platform, overlay). A
// checkpoint kept for later restores only where the format is the same.
// Computed once per OCI.
func (o *OCI) CheckpointFormat(ctx context.Context) (string, error) {
	if o.name != "runsc" {
		return "", NotCheckpointable(o.name)
	}
	o.formatOnce.Do(func() { o.format, o.formatErr = o.checkpointFormat(ctx) })
	return o.format, o.formatErr
}

func (o *OCI) checkpointFormat(ctx context.Context) (string, error) {
	out, err := o.command(ctx, nil, "--version").Output()
	if err != nil {
		return "", fmt.Errorf("%s --version: %w", o.name, err)
	}
	version, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	f, err := os.Open(o.path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("read %s: %w", o.path, err)
	}
	return fmt.Sprintf("%s (binary sha256:%s), %s", version, hex.EncodeToString(h.Sum(nil))[:16], strings.Join(o.flags, " ")), nil
}

// formatCache holds CheckpointFormat's answer.
type formatCache struct {
	formatOnce sync.Once
	format     string
	formatErr  error
}
