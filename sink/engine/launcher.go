package engine

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
)

// ListenQuery is what the launcher asks the engine to run: open the native and HTTP listeners,
// then read one row a second forever, which keeps clickhouse-local (and with it the listeners)
// alive until the process is killed.
const ListenQuery = "SYSTEM START LISTEN TCP; SYSTEM START LISTEN HTTP; " +
	"SELECT sleepEachRow(1) FROM system.numbers SETTINGS max_block_size=1, max_execution_time=0 FORMAT Null"

// Main is the launcher: it runs a ClickHouse server in this process with the flags in args
// (-path, -config, -listen-host, -tcp-port, -http-port) and returns the exit code when the
// engine ends, which it does only on an error (a port taken, a data directory held by another
// engine): otherwise the process runs until it is killed. It must be the only use of the engine
// in the process.
func Main(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("engine", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("path", "", "data directory of the engine (required)")
	config := fs.String("config", "", "configuration file (users, logs; required)")
	host := fs.String("listen-host", "127.0.0.1", "address the listeners bind")
	tcp := fs.Int("tcp-port", 0, "native protocol port (required)")
	http := fs.Int("http-port", 0, "HTTP interface port (required)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *path == "" || *config == "" || *tcp <= 0 || *tcp > 65535 || *http <= 0 || *http > 65535 || fs.NArg() != 0 {
		fmt.Fprintln(stderr, "usage: engine -path DIR -config FILE -tcp-port P -http-port Q [-listen-host H]")
		return 2
	}
	if os.Getppid() == 1 { // the parent died before the kernel could tie this process to it
		fmt.Fprintln(stderr, "engine: parent process gone, not starting")
		return 1
	}
	err := runCmdline([]string{
		"--path=" + *path,
		"--config-file=" + *config,
		"--listen_host=" + *host,
		"--tcp_port=" + strconv.Itoa(*tcp),
		"--http_port=" + strconv.Itoa(*http),
		// clickhouse-local logs at trace level whatever the configuration says: queries and
		// their text in every line. Warnings and errors only.
		"--log-level=warning",
		"--query=" + ListenQuery,
	})
	if err != nil {
		fmt.Fprintf(stderr, "engine: %v\n", err)
	} else {
		fmt.Fprintln(stderr, "engine: clickhouse-local ended")
	}
	return 1
}
