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
		h.mu.Lock()
		if h.closed {
			h.mu.Unlock()
			conn.Close()
			return
		}
		h.wg.Add(1)
		h.mu.Unlock()
		defer h.wg.Done()
		h.serveConn(conn, token)
	})
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

func (h *Handler) serveConn(conn *websocket.Conn, token string) {
	ctx, cancel := context.WithCancel(h.ctx)
	var reqs sync.WaitGroup
	defer func() {
		cancel()
		reqs.Wait()
		conn.Close()
	}()
	// Close the socket when the handler shuts down so ReadMessage returns.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	conn.SetReadLimit(int64(h.cfg.MaxBodyBytes))
	w := &wsConn{conn: conn}
	if token == "" {
		_ = conn.SetReadDeadline(time.Now().Add(h.cfg.AuthTimeout))
		_, msg, err := conn.ReadMessage()
		if err != nil {
			return
		}
		var req Request
		var p struct {
			Token string `json:"token"`
		}
		if json.Unmarshal(msg, &req) != nil || req.Op != "auth" || json.Unmarshal(req.Params, &p) != nil {
			h.count("auth", CodeUnauthenticated)
			_ = w.send(&Response{ID: req.ID, Type: "error", Error: &ErrorBody{CodeUnauthenticated, "first message must be auth"}})
			return
		}
		if _, err := h.authenticate(ctx, p.Token); err != nil {
			eb := h.errorBody(err)
			h.count("auth", eb.Code)
			_ = w.send(&Response{ID: req.ID, Type: "error", Error: eb})
			return
		}
		token = p.Token
		h.requests.WithLabelValues("auth", "ok").Inc()
		if w.send(&Response{ID: req.ID, Type: "result", Result: map[string]bool{"authenticated": true}}) != nil {
			return
		}
		_ = conn.SetReadDeadline(time.Time{})
	}
	sem := make(chan struct{}, h.cfg.MaxInFlight)
	for {
		typ, msg, err := conn.ReadMessage()
		if err != nil {
			return
		}
		if typ != websocket.TextMessage {
			_ = w.send(&Response{Type: "error", Error: &ErrorBody{CodeInvalidRequest, "text frames only"}})
			continue
		}
		var req Request
		if err := json.Unmarshal(msg, &req); err != nil {
			h.count("unknown", CodeInvalidRequest)
			_ = w.send(&Response{Type: "error", Error: &ErrorBody{CodeInvalidRequest, "malformed message"}})
			continue
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return
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
