package collector

import (
	"bytes"
	"net/netip"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/kyomi/collector/collector/bot"
	"github.com/kyomi/collector/collector/clientip"
	"github.com/kyomi/collector/collector/enrich"
	"github.com/kyomi/collector/collector/workspace"
	"github.com/kyomi/collector/sink"
)

// eventState is the pooled per-request state of the event handler. Reset keeps capacity.
type eventState struct {
	hot     *hotStripe // where this state's requests are counted; never reset
	beacon  Beacon
	ev      sink.Event
	rec     []byte   // the encoded events, one per domain, back to back
	recs    [][]byte // each event's bytes in rec (in an earlier array of rec if rec grew since)
	domains []string
	errBody []byte
}

func (st *eventState) reset() {
	st.beacon.Reset()
	clear(st.ev.PropKeys) // drop references into the last request's buffers
	clear(st.ev.PropValues)
	keys, vals := st.ev.PropKeys[:0], st.ev.PropValues[:0]
	st.ev = sink.Event{PropKeys: keys, PropValues: vals}
	st.rec = st.rec[:0]
	clear(st.recs)
	st.recs = st.recs[:0]
	clear(st.domains)
	st.domains = st.domains[:0]
	st.errBody = st.errBody[:0]
}

// event answers one /api/event request.
func (s *Server) event(ctx *fasthttp.RequestCtx) {
	// One clock read serves the whole request: fasthttp reads the time before each handler call,
	// and it stands for the latency's start, the rate limits and the event's timestamp.
	start := ctx.Time()
	if start.IsZero() { // a RequestCtx used without its server
		start = time.Now()
	}
	st := s.pool.Get().(*eventState)
	defer func() {
		st.hot.observe(time.Since(start))
		st.reset()
		s.pool.Put(st)
	}()

	origin, originWS := s.allowOrigin(ctx)
	if ctx.IsOptions() {
		s.preflight(ctx, origin, originWS)
		return
	}
	if !ctx.IsPost() {
		ctx.Response.Header.Set("Allow", "POST, OPTIONS")
		s.m.reject(rejectMethod)
		s.fail(ctx, st, fasthttp.StatusMethodNotAllowed, "method must be POST")
		return
	}
	st.hot.received.Add(1)

	if !acceptableContentType(ctx.Request.Header.ContentType()) {
		s.m.reject(rejectBadRequest)
		s.fail(ctx, st, fasthttp.StatusBadRequest, "content-type: must be text/plain or application/json")
		return
	}
	body := ctx.Request.Body()
	if len(body) > MaxBodyBytes || ctx.Request.Header.ContentLength() > MaxBodyBytes {
		s.m.reject(rejectTooLarge)
		s.fail(ctx, st, fasthttp.StatusRequestEntityTooLarge, eventTooLarge)
		return
	}
	b := &st.beacon
	if err := b.Decode(body); err != nil {
		s.m.reject(rejectBadRequest)
		s.fail(ctx, st, fasthttp.StatusBadRequest, err.Error())
		return
	}
	page, err := enrich.ParsePage(b.URL, b.HashMode)
	if err != nil {
		s.m.reject(rejectBadRequest)
		s.fail(ctx, st, fasthttp.StatusBadRequest, "url: "+err.Error())
		return
	}

	// Domain check: every d, the host of u and the Origin all in one workspace. The host is the
	// one ParsePage read, the same that is stored: one parser decides both. Without d the
	// host of u is the domain, as in Plausible.
	domain := b.Domain
	if b.DomainFromURL {
		domain = page.Host
	}
	ws, msg, status := s.matchDomains(st, domain)
	if ws == nil {
		reason := rejectForbidden
		if status == fasthttp.StatusBadRequest {
			reason = rejectBadRequest
		}
		s.m.reject(reason)
		s.fail(ctx, st, status, msg)
		return
	}
	if len(st.domains) == 1 && page.Host == st.domains[0] {
		// The common case: the page is on the configured domain the event names, which is ws's.
	} else if uws, _, ok := s.cfg.Registry.Match(page.Host); !ok || uws.ID != ws.ID {
		s.m.reject(rejectForbidden)
		s.fail(ctx, st, fasthttp.StatusForbidden, "url: host is not a domain of the workspace of domain")
		return
	}
	if len(origin) > 0 && (originWS == nil || originWS.ID != ws.ID) {
		s.m.reject(rejectForbidden)
		s.fail(ctx, st, fasthttp.StatusForbidden, "origin: not a domain of the workspace of domain")
		return
	}

	// Client address: used for the rate limit, the bot filter, geo and the visitor id, then gone.
	h := &ctx.Request.Header
	ip := clientAddr(s.cfg.Resolver, peerAddr(ctx), h)
	if !s.cfg.ClientRate.AllowAddr(ip, start) {
		s.m.reject(rejectRateClient)
		s.fail(ctx, st, fasthttp.StatusTooManyRequests, "rate limited")
		return
	}
	if !s.cfg.WSRate.AllowKey(ws.ID, start) {
		s.m.reject(rejectRateWS)
		s.fail(ctx, st, fasthttp.StatusTooManyRequests, "rate limited")
		return
	}

	uaRaw := h.UserAgent()
	ua := s.cfg.UA.Parse(uaRaw)
	ref := enrich.ParseReferrer(b.Referrer, page.Hostname)
	var purpose []byte
	for _, k := range headerPurposes {
		if purpose = h.PeekCanonical(k); len(purpose) > 0 {
			break
		}
	}
	if reason := s.cfg.Bots.Check(&bot.Request{
		UA: uaRaw, ParsedUA: &ua, ReferrerHost: ref.Host,
		AcceptLanguage: h.PeekCanonical(headerAcceptLanguage), Purpose: purpose, ClientIP: ip,
	}); reason != "" {
		s.m.drop(reason)
		ctx.Response.Header.Set("X-Collector-Dropped", reason)
		plain(ctx, fasthttp.StatusAccepted, "ok")
		return
	}

	now := start
	if s.cfg.Now != nil {
		now = s.cfg.Now()
	}
	now = now.UTC().Truncate(time.Millisecond)
	daySalt, err := s.cfg.Salts.Salt(now)
	if err != nil {
		s.m.reject(rejectSalt)
		s.throttledError("cannot make a visitor id: no salt", err)
		s.fail(ctx, st, fasthttp.StatusServiceUnavailable, "temporarily unavailable")
		return
	}
	geo := s.cfg.Geo.Lookup(ip)

	ev := &st.ev
	ev.WorkspaceID = ws.ID
	ev.TS = now
	ev.Name = b.Name
	ev.Hostname = page.Hostname
	ev.Pathname = page.Pathname
	ev.RetentionDays = ws.RetentionDays
	ev.Referrer = ref.URL
	// Tagged by the site owner (utm_source, source or ref): it wins, under its known name
	// ("facebook" → "Facebook"), as in Plausible.
	ev.ReferrerSource = enrich.CanonicalSource(page.UTMSource)
	if ev.ReferrerSource == "" {
		ev.ReferrerSource = ref.Source
	}
	ev.UTMSource, ev.UTMMedium, ev.UTMCampaign = page.UTMSource, page.UTMMedium, page.UTMCampaign
	if ev.UTMMedium == "" {
		// A Google or Bing ad click that the site did not tag, as Plausible marks it.
		switch {
		case page.Gclid && ev.ReferrerSource == "Google":
			ev.UTMMedium = "(gclid)"
		case page.Msclkid && ev.ReferrerSource == "Bing":
			ev.UTMMedium = "(msclkid)"
		}
	}
	ev.UTMContent, ev.UTMTerm, ev.ClickIDParam = page.UTMContent, page.UTMTerm, page.ClickIDParam
	ev.CountryCode, ev.Region, ev.City = geo.CountryCode, geo.Region, geo.City
	ev.Browser, ev.BrowserVersion, ev.OS, ev.OSVersion, ev.Device = ua.Browser, ua.BrowserVersion, ua.OS, ua.OSVersion, ua.Device
	ev.Interactive = b.Interactive
	if b.HasRevenue {
		ev.RevenueAmount, ev.RevenueCurrency = b.Revenue, b.Currency
	}
	ev.TrackerVersion = b.TrackerVersion
	if b.Name == EngagementName {
		ev.ScrollDepth, ev.EngagementTime = b.ScrollDepth, b.EngagementTime
	}
	ev.PropKeys = append(ev.PropKeys[:0], b.PropKeys...)
	ev.PropValues = append(ev.PropValues[:0], b.PropValues...)

	// One event per domain, appended together: all are stored, in one spool append, or none
	// is, so a client that retries a 503 never duplicates the domains that went through.
	for _, d := range st.domains {
		ev.Domain = d
		ev.VisitorID = daySalt.VisitorID(ws.ID, d, ip, uaRaw)
		start := len(st.rec)
		st.rec = ev.AppendBinary(st.rec)
		st.recs = append(st.recs, st.rec[start:])
	}
	if err := s.cfg.Spool.AppendAll(st.recs); err != nil {
		s.m.reject(rejectSpool)
		s.throttledError("cannot append the event to the spool", err)
		s.fail(ctx, st, fasthttp.StatusServiceUnavailable, "temporarily unavailable")
		return
	}
	st.hot.accepted.Add(uint64(len(st.recs)))
	plain(ctx, fasthttp.StatusAccepted, "ok")
}

// matchDomains splits d, looks every entry up and checks that they all belong to one workspace.
// It fills st.domains with the configured domains (deduplicated) and returns the workspace, or a
// message and its status (400 for a malformed list, 403 for a domain not configured).
func (s *Server) matchDomains(st *eventState, d string) (*workspace.Workspace, string, int) {
	var ws *workspace.Workspace
	n := 0
	for rest := d; ; {
		part, tail, more := strings.Cut(rest, ",")
		part = strings.TrimSpace(part)
		n++
		switch {
		case part == "":
			return nil, "domain: empty entry in the list", fasthttp.StatusBadRequest
		case n > MaxDomains:
			return nil, "domain: more than 10 domains", fasthttp.StatusBadRequest
		}
		w, conf, ok := s.cfg.Registry.Match(part)
		if !ok {
			return nil, "domain: not configured for any workspace", fasthttp.StatusForbidden
		}
		if ws != nil && w.ID != ws.ID {
			return nil, "domain: the listed domains belong to different workspaces", fasthttp.StatusForbidden
		}
		ws = w
		dup := false
		for _, have := range st.domains {
			dup = dup || have == conf
		}
		if !dup {
			st.domains = append(st.domains, conf)
		}
		if !more {
			return ws, "", 0
		}
		rest = tail
	}
}

// allowOrigin sets the CORS headers every event answer carries and returns the Origin header with
// the workspace it belongs to (nil when it is absent or not configured).
func (s *Server) allowOrigin(ctx *fasthttp.RequestCtx) ([]byte, *workspace.Workspace) {
	ctx.Response.Header.SetCanonical(headerVary, headerOrigin)
	origin := ctx.Request.Header.PeekCanonical(headerOrigin)
	if len(origin) == 0 {
		return origin, nil
	}
	host, ok := originHost(origin)
	if !ok {
		return origin, nil
	}
	ws, _, ok := s.cfg.Registry.Match(bytesString(host))
	if !ok {
		return origin, nil
	}
	// The origin is a configured site: let its page read every answer, errors included.
	ctx.Response.Header.SetCanonical(headerACAO, origin)
	return origin, ws
}

// preflight answers a CORS preflight. Only configured origins get the allow headers; browsers then
// refuse the actual request from anywhere else.
func (s *Server) preflight(ctx *fasthttp.RequestCtx, origin []byte, ws *workspace.Workspace) {
	if len(origin) > 0 && ws == nil {
		s.m.reject(rejectForbidden)
		s.fail(ctx, nil, fasthttp.StatusForbidden, "origin: not configured for any workspace")
		return
	}
	h := &ctx.Response.Header
	h.Set("Allow", "POST, OPTIONS")
	if ws != nil {
		h.Set("Access-Control-Allow-Methods", "POST")
		h.Set("Access-Control-Allow-Headers", "Content-Type")
		h.Set("Access-Control-Max-Age", "86400")
	}
	ctx.SetStatusCode(fasthttp.StatusNoContent)
}

// fail answers with status and {"error": msg}. msg never contains request data.
func (s *Server) fail(ctx *fasthttp.RequestCtx, st *eventState, status int, msg string) {
	var buf []byte
	if st != nil {
		buf = st.errBody[:0]
	}
	buf = append(buf, `{"error":`...)
	buf = appendJSONString(buf, msg)
	buf = append(buf, '}')
	if st != nil {
		st.errBody = buf
	}
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	ctx.SetBody(buf)
}

// throttledError logs a hot-path failure at most once a second.
func (s *Server) throttledError(msg string, err error) {
	now := time.Now().Unix()
	last := s.logThrottle.Load()
	if now > last && s.logThrottle.CompareAndSwap(last, now) {
		s.log.Error(msg, "err", err)
	}
}

func appendJSONString(dst []byte, v string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c < 0x20:
			dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			dst = append(dst, c)
		}
	}
	return append(dst, '"')
}

// acceptableContentType reports whether ct is empty, text/plain or application/json, with any
// parameters.
func acceptableContentType(ct []byte) bool {
	if i := bytes.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	ct = bytes.TrimSpace(ct)
	return len(ct) == 0 || bytes.EqualFold(ct, []byte("text/plain")) || bytes.EqualFold(ct, []byte("application/json"))
}

// originHost returns the host (with port) of an Origin header value "scheme://host[:port]".
func originHost(origin []byte) ([]byte, bool) {
	i := bytes.Index(origin, []byte("://"))
	if i <= 0 {
		return nil, false // "null" and garbage
	}
	host := origin[i+3:]
	if len(host) == 0 || bytes.IndexAny(host, "/?#@") >= 0 {
		return nil, false
	}
	return host, true
}

// clientAddr resolves the client address from every X-Forwarded-For line (a proxy may add its own
// line after the one the client wrote), or from Forwarded when there is no X-Forwarded-For.
// fasthttp's PeekAll reuses one buffer per header, so the two are never held at once.
func clientAddr(r *clientip.Resolver, peer netip.Addr, h *fasthttp.RequestHeader) netip.Addr {
	if xff := h.PeekAll("X-Forwarded-For"); len(xff) > 0 {
		return r.ClientIPHeaders(peer, xff, nil)
	}
	return r.ClientIPHeaders(peer, nil, h.PeekAll("Forwarded"))
}
