package engine

import "golang.org/x/sys/unix"

// hostMemory is the host's RAM in bytes (8 GiB if it cannot be read).
func hostMemory() int64 {
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) != nil || si.Totalram == 0 {
		return 8 << 30
	}
	return int64(si.Totalram) * int64(si.Unit)
}
