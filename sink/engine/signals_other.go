//go:build !linux

package engine

// kernelSigaction is a placeholder: libchdb.so is built for Linux only.
type kernelSigaction struct{}

func saveSignals() []kernelSigaction { return nil }

func restoreSignals([]kernelSigaction) {}
