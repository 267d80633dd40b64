package engine

import "syscall"

// childAttr makes the kernel kill the engine when the thread that started it ends (see start),
// and puts the engine in a process group of its own.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
}
