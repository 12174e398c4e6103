//go:build !linux

package store

// dropPages does nothing here: MADV_DONTNEED's meaning for shared file
// mappings is Linux's.
func dropPages(b []byte) error { return nil }

// residentFileBytes is unknown here (-1): the log runs trimMapped at every
// poll, where dropPages does nothing.
func residentFileBytes() int64 { return -1 }
