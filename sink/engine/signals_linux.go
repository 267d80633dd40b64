//go:build linux

package engine

import (
	"syscall"
	"unsafe"
)

// kernelSigaction is struct sigaction as the Linux rt_sigaction system call
// sees it on 64-bit platforms: handler, flags, restorer, mask.
type kernelSigaction struct {
	handler, flags, restorer, mask uint64
}

// guardedSignals are the signals the engine takes over and the Go runtime
// needs (nil-pointer panics, crash reports, preemption).
var guardedSignals = []syscall.Signal{
	syscall.SIGABRT, syscall.SIGSEGV, syscall.SIGILL, syscall.SIGBUS,
	syscall.SIGSYS, syscall.SIGFPE, syscall.SIGTSTP, syscall.SIGTRAP,
	syscall.SIGURG, syscall.SIGPIPE, syscall.SIGINT, syscall.SIGTERM,
}

func saveSignals() []kernelSigaction {
	out := make([]kernelSigaction, len(guardedSignals))
	for i, s := range guardedSignals {
		_, _, _ = syscall.RawSyscall6(syscall.SYS_RT_SIGACTION, uintptr(s), 0,
			uintptr(unsafe.Pointer(&out[i])), 8, 0, 0)
	}
	return out
}

func restoreSignals(saved []kernelSigaction) {
	for i, s := range guardedSignals {
		_, _, _ = syscall.RawSyscall6(syscall.SYS_RT_SIGACTION, uintptr(s),
			uintptr(unsafe.Pointer(&saved[i])), 0, 8, 0, 0)
	}
}
