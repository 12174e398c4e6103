//go:build !linux

package store

// dropPages does nothing here: MADV_DONTNEED's meaning for shared file
// mappings is Linux's.
func dropPages(b []byte) error { return nil }

// residentFileBytes is unknown here (-1): the log runs trimMapped at every
// poll, where dropPages does nothing.
func residentFileBytes() int64 { return -1 }

// pageOutFiles does nothing here.
func pageOutFiles(dir, suffix string, skip map[uintptr]bool) (int, error) { return 0, nil }

// pageOutSupported: MADV_PAGEOUT is Linux's.
func pageOutSupported() bool { return false }
