//go:build !unix

package chaos

import "io/fs"

// allocated is the file's size (no block counts here).
func allocated(fi fs.FileInfo) int64 { return fi.Size() }
