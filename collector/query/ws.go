package query

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/valyala/fasthttp"
)

// WebSocket serves GET /connect/v1. The caller authenticates with an
// "Authorization: Bearer" header on the upgrade, or else with a first
// message {"id":..,"op":"auth","params":{"token":".."}} within AuthTimeout.
// Each text frame is one request; answers are text frames carrying the
// request's id, in completion order. At most MaxInFlight requests of one
// connection run at once; further frames wait to be read (backpressure).
// The token is verified again (exp, revocation) before every request.
func (h *Handler) WebSocket(rc *fasthttp.RequestCtx) {
	token := bearer(rc)
	if token != "" {
		if _, err := h.authenticate(h.ctx, token); err != nil {
			eb := h.errorBody(err)
			h.count("auth", eb.Code)
			rc.SetContentType("application/json")
			out, _ := json.Marshal(&Response{Type: "error", Error: eb})
			rc.SetStatusCode(fasthttp.StatusUnauthorized)
			rc.SetBody(out)
			return
		}
	}
	// The callback runs after the handshake in fasthttp's hijack goroutine,
	// or never if the handshake fails; it registers itself with Close.
	_ = h.upgrader.Upgrade(rc, func(conn *websocket.Conn) {
		if !h.enter() {
			conn.Close()
			return
		}
		defer h.wg.Done()
		_ = h.serveConn(h.ctx, conn, token, 0)
	})
}

// enter registers a goroutine that Close must wait for; it returns false
// once the handler is closed.
func (h *Handler) enter() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return false
	}
	h.wg.Add(1)
	return true
}

type wsConn struct {
	conn *websocket.Conn
	mu   sync.Mutex
}

func (w *wsConn) send(r *Response) error {
	out, err := json.Marshal(r)
	if err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	_ = w.conn.SetWriteDeadline(time.Now().Add(30 * time.Second))
	return w.conn.WriteMessage(websocket.TextMessage, out)
}

// serveConn is the message loop of one Connect WebSocket, whichever side
// dialed it: the /connect/v1 server and the dial-out Agent both run it. It
// owns conn and closes it when ctx ends or the peer goes away, after every
// request of the connection has been answered or cancelled. An empty token
// means the first message must be an auth message. Each request is verified
// again with the token, then answered by Do in its own goroutine (at most
// MaxInFlight at once); answers carry the request's id, in completion order.
// With idle > 0 each read must complete within idle of its start (pongs to
// the dialer's pings count, see Agent), so a peer that vanished behind a NAT
// is noticed; the deadline is set only when the loop is ready to read, so
// time spent waiting for a free request slot never counts against the peer.
// It returns the error that ended the connection (nil when ctx ended it).
func (h *Handler) serveConn(ctx context.Context, conn *websocket.Conn, token string, idle time.Duration) error {
	ctx, cancel := context.WithCancel(ctx)
	var reqs sync.WaitGroup
	defer func() {
		cancel()
		reqs.Wait()
		conn.Close()
	}()
	// Close the socket when ctx ends so ReadMessage returns.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	conn.SetReadLimit(int64(h.cfg.MaxBodyBytes))
	w := &wsConn{conn: conn}
	if token == "" {
		var ok bool
		if token, ok = h.authFirst(ctx, conn, w); !ok {
			return nil
		}
	}
	sem := make(chan struct{}, h.cfg.MaxInFlight)
	for {
		if idle > 0 {
			_ = conn.SetReadDeadline(time.Now().Add(idle))
		}
		typ, msg, err := conn.ReadMessage()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if typ != websocket.TextMessage {
			_ = w.send(&Response{Type: "error", Error: &ErrorBody{CodeInvalidRequest, "text frames only"}})
			continue
		}
		req, err := decodeRequest(msg)
		if err != nil {
			h.count("unknown", CodeInvalidRequest)
			_ = w.send(&Response{Type: "error", Error: &ErrorBody{CodeInvalidRequest, "malformed message"}})
			continue
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		reqs.Add(1)
		go func() {
			defer func() { <-sem; reqs.Done() }()
			c, err := h.authenticate(ctx, token)
			if err != nil {
				eb := h.errorBody(err)
				h.count(req.Op, eb.Code)
				_ = w.send(&Response{ID: req.ID, Type: "error", Error: eb})
				return
			}
			rctx, rcancel := context.WithTimeout(ctx, time.Duration(h.cfg.Limits.MaxExecutionSecs+5)*time.Second)
			defer rcancel()
			_ = w.send(h.Do(rctx, c, &req))
		}()
	}
}

// authFirst reads the auth message of a connection that had no bearer
// header and returns its token, or false after answering the refusal.
func (h *Handler) authFirst(ctx context.Context, conn *websocket.Conn, w *wsConn) (string, bool) {
	_ = conn.SetReadDeadline(time.Now().Add(h.cfg.AuthTimeout))
	_, msg, err := conn.ReadMessage()
	if err != nil {
		return "", false
	}
	var p struct {
		Token string `json:"token"`
	}
	req, err := decodeRequest(msg)
	if err != nil || req.Op != "auth" || decodeExact(req.Params, &p, false) != nil {
		h.count("auth", CodeUnauthenticated)
		_ = w.send(&Response{ID: req.ID, Type: "error", Error: &ErrorBody{CodeUnauthenticated, "first message must be auth"}})
		return "", false
	}
	if _, err := h.authenticate(ctx, p.Token); err != nil {
		eb := h.errorBody(err)
		h.count("auth", eb.Code)
		_ = w.send(&Response{ID: req.ID, Type: "error", Error: eb})
		return "", false
	}
	h.requests.WithLabelValues("auth", "ok").Inc()
	if w.send(&Response{ID: req.ID, Type: "result", Result: map[string]bool{"authenticated": true}}) != nil {
		return "", false
	}
	_ = conn.SetReadDeadline(time.Time{})
	return p.Token, true
}
