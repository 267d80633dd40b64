//go:build !linux

package spool

import "os"

// datasync flushes f to stable storage; outside Linux it is a full fsync.
func datasync(f *os.File) error { return f.Sync() }
