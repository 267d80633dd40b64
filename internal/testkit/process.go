package testkit

import (
	"os"
	"strconv"
	"strings"
)

// ProcessAlive reports whether process pid runs: it exists and is not a zombie (dead, not yet
// reaped by its parent). A zombie thread-group leader whose other threads are still being torn
// down (SIGKILL reaches a thread in a system call, an fsync say, only when it returns) still
// holds the process's files and locks, so it counts as alive until its last thread is gone.
// Linux only: it reads /proc; elsewhere it reports false.
func ProcessAlive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')') // the command name in parentheses may hold anything
	if i < 0 || i+2 >= len(s) || s[i+2] != 'Z' {
		return true
	}
	tasks, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/task")
	return err == nil && len(tasks) > 1
}
