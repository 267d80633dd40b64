package collector

import (
	"errors"
	"io"
	"net"
	"strconv"

	"github.com/valyala/fasthttp"
)

const (
	// MaxRequestBytes is the largest request body the HTTP server reads: the query path's messages
	// carry SQL. A larger body is answered 413 by ErrorHandler before any handler runs. The event
	// handler refuses bodies over its own, smaller MaxBodyBytes itself.
	MaxRequestBytes = 1 << 20
	// readBufferBytes bounds the request line and headers; larger ones are answered 431.
	readBufferBytes = 8 << 10
)

// HTTPServer returns a fasthttp.Server that answers with s: Handler for the requests it reads,
// ErrorHandler for those it cannot read, with the request limits above. The caller sets timeouts,
// connection limits and naming before Serve, and owns the returned server.
func (s *Server) HTTPServer(log fasthttp.Logger) *fasthttp.Server {
	return &fasthttp.Server{
		Handler:            s.Handler(),
		ErrorHandler:       s.ErrorHandler,
		MaxRequestBodySize: MaxRequestBytes,
		ReadBufferSize:     readBufferBytes,
		// Without this fasthttp answers a malformed multipart body itself, before the handler.
		DisablePreParseMultipartForm: true,
		Logger:                       log,
	}
}

// ErrorHandler answers a request the HTTP server could not read, in place of fasthttp's plain-text
// "400 Error when parsing request": 413 when the body is over MaxRequestBytes, 431 when the request
// line and headers overflow the read buffer, 408 when the client was too slow, 400 for anything
// else (a garbage request line, broken chunks).
//
// The answer has the shape of the path's own errors when the path is known: on /api/event the
// handler's {"error": "..."} with its CORS headers, counted in collector_events_rejected_total; on
// the route with a Config.Refused function, that function's (routes matched as Handler matches
// them). Elsewhere it is {"error": "..."}. The path is known only when the request line and
// headers were read and the body was not (a Content-Length over the limit): fasthttp resets the
// request when reading either fails, so a chunked body over the limit gets the answer of no
// particular path.
//
// Every answer is counted in collector_http_requests_total, except to a client that closed the
// connection before sending a whole request. The answer never quotes the request and err is not
// logged: fasthttp's parse errors quote the request bytes.
func (s *Server) ErrorHandler(ctx *fasthttp.RequestCtx, err error) {
	status, msg := refusedStatus(err)
	s.securityHeaders(ctx)
	count := !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF)
	path := ctx.Path() // "/" when fasthttp reset the request (see above)
	if string(path) == "/api/event" {
		s.allowOrigin(ctx)
		if count {
			reason := rejectBadRequest
			if status == fasthttp.StatusRequestEntityTooLarge {
				reason, msg = rejectTooLarge, eventTooLarge // the event handler's own 413
			}
			if ctx.IsPost() {
				s.m.hot.stripe().received.Add(1)
			}
			s.m.reject(reason)
		}
		s.fail(ctx, nil, status, msg)
		if count {
			s.m.code(handlerEvent, status)
		}
		return
	}
	label := handlerOther
	// "/" is what fasthttp leaves after a reset: no particular path, not the dashboard's route.
	if r, ok := s.routeFor(path); ok && string(path) != "/" {
		label = r.key
		if f := s.cfg.Refused[r.key]; f != nil {
			f(ctx, status)
			ctx.Response.Header.DelAllCookies()
			if count {
				s.m.code(r.key, ctx.Response.StatusCode())
			}
			return
		}
	}
	s.fail(ctx, nil, status, msg)
	if count {
		s.m.code(label, status)
	}
}

var (
	eventTooLarge   = "body: larger than " + strconv.Itoa(MaxBodyBytes) + " bytes"
	requestTooLarge = "body: larger than " + strconv.Itoa(MaxRequestBytes) + " bytes"
)

// refusedStatus maps an error of fasthttp's request reading to the answer's status and message.
func refusedStatus(err error) (int, string) {
	var small *fasthttp.ErrSmallBuffer
	var ne net.Error
	switch {
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		return fasthttp.StatusRequestEntityTooLarge, requestTooLarge
	case errors.As(err, &small):
		return fasthttp.StatusRequestHeaderFieldsTooLarge, "request: headers too large"
	case errors.As(err, &ne) && ne.Timeout():
		return fasthttp.StatusRequestTimeout, "request: not received in time"
	}
	return fasthttp.StatusBadRequest, "request: malformed"
}
