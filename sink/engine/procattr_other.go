//go:build !linux

package engine

import "syscall"

// childAttr puts the engine in a process group of its own. Only Linux has a parent-death signal;
// elsewhere a stale engine is found through engine.pid at the next start.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
