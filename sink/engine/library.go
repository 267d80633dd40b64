package engine

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/ebitengine/purego"
)

// Version is the chDB release the collector is built and tested against.
const Version = "26.7.3-stable.1"

// LibPathEnv is the environment variable that overrides the library path.
const LibPathEnv = "CHDB_LIB_PATH"

// DefaultLibPath returns where the library is looked for: LibPathEnv when set, else
// $HOME/.cache/kyomi/<Version>/libchdb.so, where `make deps` puts it.
func DefaultLibPath() string {
	if p := os.Getenv(LibPathEnv); p != "" {
		return p
	}
	home, err := os.UserHomeDir()
	if err != nil {
		home = "/root"
	}
	return filepath.Join(home, ".cache", "kyomi", Version, "libchdb.so")
}

// library holds the entry points of libchdb.so (chdb.h) the launcher calls. It is loaded with
// purego at run time, so the binary needs no cgo and starts without the library: only the
// engine's child process loads it.
type library struct {
	cmdline     func(argc int32, argv unsafe.Pointer) unsafe.Pointer // chdb_result *chdb_query_cmdline(int, char **)
	errMsg      func(res unsafe.Pointer) unsafe.Pointer              // const char *chdb_result_error(chdb_result *)
	destroy     func(res unsafe.Pointer)                             // void chdb_destroy_query_result(chdb_result *)
	setSignals  func(enabled int32)                                  // void chdb_set_signal_handlers_enabled(int)
	hasSignalFn bool
}

// errRunning is returned by runCmdline when the engine already runs in this process.
var errRunning = errors.New("the ClickHouse engine already runs in this process")

var (
	loadOnce sync.Once
	lib      *library
	errLoad  error
	running  atomic.Bool // set by the first runCmdline, never cleared
)

// loadLibrary loads libchdb.so from DefaultLibPath once per process; later calls return the
// first result.
func loadLibrary() error {
	loadOnce.Do(func() { lib, errLoad = load(DefaultLibPath()) })
	return errLoad
}

func load(path string) (*library, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("embedded ClickHouse engine not found at %s: run `make deps` or set %s", path, LibPathEnv)
	}
	h, err := purego.Dlopen(path, purego.RTLD_NOW|purego.RTLD_GLOBAL)
	if err != nil {
		return nil, fmt.Errorf("cannot load embedded ClickHouse engine from %s (run `make deps` or set %s): %w", path, LibPathEnv, err)
	}
	l := &library{}
	for _, s := range []struct {
		name string
		fn   any
	}{
		{"chdb_query_cmdline", &l.cmdline},
		{"chdb_result_error", &l.errMsg},
		{"chdb_destroy_query_result", &l.destroy},
	} {
		sym, err := purego.Dlsym(h, s.name)
		if err != nil {
			return nil, fmt.Errorf("cannot use embedded ClickHouse engine at %s: symbol %s missing (need chDB %s): %w", path, s.name, Version, err)
		}
		purego.RegisterFunc(s.fn, sym)
	}
	if sym, err := purego.Dlsym(h, "chdb_set_signal_handlers_enabled"); err == nil {
		purego.RegisterFunc(&l.setSignals, sym)
		l.hasSignalFn = true
	}
	return l, nil
}

// argvOf builds a C argv (NUL-terminated strings, then a NULL) from args, pinned by pin until
// the caller unpins it.
func argvOf(args []string, pin *runtime.Pinner) unsafe.Pointer {
	argv := make([]unsafe.Pointer, len(args)+1)
	for i, a := range args {
		c := append([]byte(a), 0)
		pin.Pin(&c[0])
		argv[i] = unsafe.Pointer(&c[0])
	}
	pin.Pin(&argv[0])
	return unsafe.Pointer(&argv[0])
}

// runCmdline runs clickhouse-local in this process with the command-line arguments args
// (without the program name), as the clickhouse-local binary would, and returns when it ends,
// with the engine's error message if it failed. With --path, the listener settings and
// ListenQuery, the process becomes a ClickHouse server until it is killed.
//
// It takes the process over: nothing else of the engine works in the process afterwards, and a
// second call fails with errRunning. The engine's own signal handlers stay off, so that the Go
// runtime keeps handling SIGTERM (the process exits) and its own faults (nil-pointer panics,
// crash reports, preemption).
func runCmdline(args []string) error {
	if err := loadLibrary(); err != nil {
		return err
	}
	if !running.CompareAndSwap(false, true) {
		return errRunning
	}
	// The engine installs handlers for SIGSEGV, SIGBUS, SIGABRT... that would take those
	// signals away from the Go runtime. Opt out, then put Go's handlers back, because opting
	// out resets those signals to SIG_DFL.
	if lib.hasSignalFn {
		saved := saveSignals()
		lib.setSignals(0)
		restoreSignals(saved)
	}
	var pin runtime.Pinner
	defer pin.Unpin()
	all := append([]string{"clickhouse-local"}, args...)
	saved := saveSignals()
	res := lib.cmdline(int32(len(all)), argvOf(all, &pin))
	restoreSignals(saved)
	if res == nil {
		return errors.New("clickhouse-local returned no result")
	}
	defer lib.destroy(res)
	if e := lib.errMsg(res); e != nil {
		if msg := goString(e); msg != "" {
			return fmt.Errorf("clickhouse-local: %s", msg)
		}
	}
	return nil
}

func goString(p unsafe.Pointer) string {
	var n int
	for *(*byte)(unsafe.Add(p, n)) != 0 {
		n++
	}
	return string(unsafe.Slice((*byte)(p), n))
}
