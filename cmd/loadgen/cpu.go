package main

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"
)

// userHZ is the unit of the CPU times in /proc/PID/stat: clock ticks of USER_HZ, which Linux
// fixes at 100 on every architecture Go supports.
const userHZ = 100

// processCPU returns the user plus system CPU time that process pid has used so far, from
// /proc/PID/stat (Linux only). Its resolution is 10 ms, so runs of seconds are measured to
// well under a percent.
func processCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, fmt.Errorf("cannot read the CPU time of process %d: %w", pid, err)
	}
	ticks, err := statCPUTicks(b)
	if err != nil {
		return 0, fmt.Errorf("cannot read the CPU time of process %d: %w", pid, err)
	}
	return time.Duration(ticks) * time.Second / userHZ, nil
}

// statCPUTicks returns utime + stime (fields 14 and 15) of a /proc/PID/stat line. The command
// name (field 2) is in parentheses and may itself hold spaces and parentheses, so the fields
// are counted from the last ')'.
func statCPUTicks(stat []byte) (uint64, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("no command name in /proc stat line")
	}
	f := bytes.Fields(stat[i+1:]) // f[0] is field 3 (state)
	if len(f) < 13 {
		return 0, errors.New("short /proc stat line")
	}
	utime, err := strconv.ParseUint(string(f[11]), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("bad utime in /proc stat line: %w", err)
	}
	stime, err := strconv.ParseUint(string(f[12]), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("bad stime in /proc stat line: %w", err)
	}
	return utime + stime, nil
}

// cpuMeter reads the CPU time of loadgen itself and, when serverPID > 0, of the server under
// load, so that a run can report both per answer.
type cpuMeter struct {
	serverPID          int
	server, self       time.Duration
	serverErr, selfErr error
}

// start records the CPU times before a run.
func (m *cpuMeter) start() {
	m.self, m.selfErr = processCPU(os.Getpid())
	if m.serverPID > 0 {
		m.server, m.serverErr = processCPU(m.serverPID)
	}
}

// stop records the CPU times after a run and sets the report's CPU per answer. A figure that
// cannot be read stays 0 and is left out of the report; the server's error is returned, for the
// caller to warn about (a wrong -server-pid, or a server that has exited).
func (m *cpuMeter) stop(rep *runReport) error {
	answers := float64(rep.Latency.Count)
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) / answers }
	if m.selfErr == nil && answers > 0 {
		if self, err := processCPU(os.Getpid()); err == nil {
			rep.LoadgenCPUMicros = us(self - m.self)
		}
	}
	if m.serverPID == 0 {
		return nil
	}
	server, err := processCPU(m.serverPID)
	if err = cmp.Or(m.serverErr, err); err != nil {
		return err
	}
	if answers > 0 {
		rep.ServerCPUMicros = us(server - m.server)
	}
	return nil
}
