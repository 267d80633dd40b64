// Package serving runs a fasthttp server on a listener in the background and stops it
// completely, for tests that need a real server.
package serving

import (
	"net"

	"github.com/valyala/fasthttp"
)

// Start serves srv on ln in a new goroutine. The returned stop shuts srv down, closes ln, waits
// until Serve has returned, and reports the first error of the two. Closing ln matters:
// Shutdown closes only the listeners Serve has registered, so a stop that comes before the Serve
// goroutine ran would otherwise leave that goroutine blocked in Accept.
func Start(srv *fasthttp.Server, ln net.Listener) (stop func() error) {
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	return func() error {
		err := srv.Shutdown()
		_ = ln.Close() // see above; after Shutdown it is already closed
		if serr := <-done; err == nil {
			err = serr
		}
		return err
	}
}
