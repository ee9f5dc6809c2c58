package layerfs

import "os"

// CopySparse copies the size bytes of src into the empty file dst, leaving
// src's holes as holes (as Flatten does).
func CopySparse(dst, src *os.File, size int64) error { return copySparse(dst, src, size) }
