package serving

import (
	"io"
	"net"
	"net/http"
	"testing"

	"github.com/valyala/fasthttp"
)

// TestStartStop serves one request, then stops: Serve has returned (the port is free again and
// a request fails), with no error.
func TestStartStop(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	stop := Start(&fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("hi") }}, ln)
	resp, err := http.Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "hi" {
		t.Fatalf("body %q", body)
	}
	http.DefaultClient.CloseIdleConnections()
	if err := stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Fatal("the listener still accepts after stop")
	}
}

// TestStopBeforeServe stops at once, usually before the Serve goroutine has run: stop must
// still return, which it would not if the listener were left open.
func TestStopBeforeServe(t *testing.T) {
	for range 20 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		if err := Start(&fasthttp.Server{Handler: func(*fasthttp.RequestCtx) {}}, ln)(); err != nil {
			t.Fatalf("stop: %v", err)
		}
	}
}
