package store

import (
	"os"
	"path/filepath"
	"testing"
	"unsafe"

	"github.com/dgraph-io/badger/v4/table"
	"golang.org/x/sys/unix"
)

// TestResidentPagesOutUnlisted: the trim has the kernel reclaim the pages
// of a table file no level holds (as a compaction's output is until the
// compaction ends), leaves an installed table's pages to trimMapped, and
// the file's contents read back the same. On a kernel without
// MADV_PAGEOUT (before Linux 5.4) the advice is refused for every mapping:
// nothing is advised, no error, and the contents still read back.
func TestResidentPagesOutUnlisted(t *testing.T) {
	supported := pageOutSupported()
	l, _, r := flattenedResident(t)
	// A table file being written, as table.CreateTable writes one: shared
	// and writable, in the database's directory.
	path := filepath.Join(l.opts.Dir, "999999.sst")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const size = 8 << 20
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	data, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(data)
	for i := range data {
		data[i] = byte(i * 7)
	}
	if err := unix.Msync(data, unix.MS_SYNC); err != nil {
		t.Fatal(err)
	}
	if _, err := r.trimMapped(); err != nil {
		t.Fatal(err)
	}
	// A table trimMapped found in a level (badger may have flushed
	// another since), held as a reader holds it.
	var installed *table.Table
	for _, lv := range r.levels {
		lv.mu.RLock()
		for _, tb := range *lv.tables {
			if installed == nil && len(tb.Data) > 0 && r.installed[uintptr(unsafe.Pointer(unsafe.SliceData(tb.Data)))] {
				installed = tb
				tb.IncrRef()
			}
		}
		lv.mu.RUnlock()
	}
	if installed == nil {
		t.Fatal("no installed table")
	}
	defer installed.DecrRef()
	var sum byte
	for i := 0; i < len(installed.Data); i += 4096 {
		sum += installed.Data[i] // mapped again
	}
	name := "/" + filepath.Base(installed.Filename())
	before, installedBefore := mappedRss(t, "/999999.sst"), mappedRss(t, name)
	n, err := r.pageOut()
	if err != nil {
		t.Fatal(err)
	}
	after, installedAfter := mappedRss(t, "/999999.sst"), mappedRss(t, name)
	t.Logf("advised %d mappings; unlisted file resident %d KiB before, %d KiB after; installed table %d KiB before, %d KiB after (sum %d)",
		n, before>>10, after>>10, installedBefore>>10, installedAfter>>10, sum)
	switch {
	case supported && (before < size/2 || after > before/8):
		t.Fatalf("unlisted table file resident %d bytes before pageOut, %d after", before, after)
	case !supported && n != 0:
		t.Fatalf("without MADV_PAGEOUT, %d mappings advised", n)
	}
	if installedBefore == 0 || installedAfter < installedBefore/2 {
		t.Fatalf("pageOut advised an installed table: resident %d bytes before, %d after", installedBefore, installedAfter)
	}
	for i := range data {
		if data[i] != byte(i*7) {
			t.Fatalf("byte %d changed after pageOut", i)
		}
	}
}
