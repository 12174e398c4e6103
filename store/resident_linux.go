package store

import (
	"bytes"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// dropPages unmaps b's pages from the process. b must be a shared mapping
// of a file: its pages stay in the page cache, dirty ones included, and a
// later access maps them again.
func dropPages(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	return unix.Madvise(b, unix.MADV_DONTNEED)
}

// residentFileBytes is the process's resident file-backed and shared
// memory (RssFile + RssShmem: /proc/self/statm's third field), or -1.
func residentFileBytes() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return -1
	}
	f := bytes.Fields(b)
	if len(f) < 3 {
		return -1
	}
	pages, err := strconv.ParseInt(string(f[2]), 10, 64)
	if err != nil {
		return -1
	}
	return pages * int64(os.Getpagesize())
}
