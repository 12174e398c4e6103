package store

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"unsafe"

	"golang.org/x/sys/unix"
)

// dropPages unmaps b's pages from the process. b must be a shared mapping
// of a file: its pages stay in the page cache, dirty ones included, and a
// later access maps them again.
func dropPages(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	return madvise(uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)), unix.MADV_DONTNEED)
}

// madvise is madvise(2) made as a raw system call, one the Go scheduler
// is not told about: the calling goroutine keeps its P. The trim makes
// hundreds of these while badger compacts on every core; with ordinary
// calls the scheduler handed the P to a compaction goroutine at each one
// that ran long, and the trim then waited a time slice for it back
// (passes of 100 – 450 ms measured, during which the files it trims grew
// by 100 MB and more). The calls do CPU work in the kernel (unmapping
// pages; MADV_PAGEOUT leaves a dirty page to writeback rather than writing
// it: 160 MB of dirty pages took 7 ms here) and wait at most for the
// address space's lock, which badger takes briefly to map or unmap a file.
func madvise(addr, length uintptr, advice int) error {
	if _, _, errno := unix.RawSyscall(unix.SYS_MADVISE, addr, length, uintptr(advice)); errno != 0 {
		return errno
	}
	return nil
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

// pageOutFiles asks the kernel to reclaim the pages of the process's
// mappings of the files in dir whose names end in suffix, except the
// mappings that start at an address in skip (madvise MADV_PAGEOUT); it
// returns how many mappings it advised. The advice never loses data,
// whatever is mapped at an address by the time it runs: clean file pages
// leave the page cache, dirty ones are written back or kept, anonymous
// ones are swapped out or kept. A mapping gone since /proc/self/maps was
// read is skipped.
func pageOutFiles(dir, suffix string, skip map[uintptr]bool) (int, error) {
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return 0, fmt.Errorf("store: memory trim: %w", err)
	}
	prefix := []byte(dir + "/")
	n := 0
	for line := range bytes.Lines(maps) {
		// start-end perms offset dev inode path; only the path has a '/'.
		i := bytes.IndexByte(line, '/')
		if i < 0 {
			continue
		}
		path := bytes.TrimRight(line[i:], "\n")
		if !bytes.HasPrefix(path, prefix) || !bytes.HasSuffix(path, []byte(suffix)) {
			continue
		}
		span, _, _ := bytes.Cut(line, []byte(" "))
		lo, hi, ok := bytes.Cut(span, []byte("-"))
		if !ok {
			continue
		}
		start, err1 := strconv.ParseUint(string(lo), 16, 64)
		end, err2 := strconv.ParseUint(string(hi), 16, 64)
		if err1 != nil || err2 != nil || end <= start || skip[uintptr(start)] {
			continue
		}
		err := madvise(uintptr(start), uintptr(end-start), unix.MADV_PAGEOUT)
		switch err {
		case nil:
			n++
		case unix.ENOMEM, unix.EINVAL, unix.EAGAIN:
			// Unmapped since, or the range now holds a mapping the
			// advice does not apply to (a locked one), or the kernel
			// was short of something: the next trim tries again.
		default:
			return n, fmt.Errorf("store: memory trim: madvise(MADV_PAGEOUT): %w", err)
		}
	}
	return n, nil
}

// pageOutSupported reports whether the kernel knows MADV_PAGEOUT (Linux
// 5.4 and later).
func pageOutSupported() bool {
	b, err := unix.Mmap(-1, 0, os.Getpagesize(), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return false
	}
	defer unix.Munmap(b)
	return unix.Madvise(b, unix.MADV_PAGEOUT) == nil
}
