//go:build !linux

package chdb

// kernelSigaction is a placeholder: libchdb.so is built for Linux only.
type kernelSigaction struct{}

func saveSignals() []kernelSigaction { return nil }

func restoreSignals([]kernelSigaction) {}
