package testkit

import (
	"os"
	"strconv"
	"strings"
)

// ProcessAlive reports whether process pid runs: it exists and is not a zombie (dead, not yet
// reaped by its parent). Linux only: it reads /proc/PID/stat; elsewhere it reports false.
func ProcessAlive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')') // the command name in parentheses may hold anything
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}
