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
	"github.com/kyomi/collector/salt"
	"github.com/kyomi/collector/sink/row"
)

// eventState is the pooled per-request state of the event handler. Reset keeps capacity.
type eventState struct {
	hot     *hotStripe // where this state's requests are counted; never reset
	beacon  Beacon
	ev      row.Event
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
	st.ev = row.Event{PropKeys: keys, PropValues: vals}
	st.rec = st.rec[:0]
	clear(st.recs)
	st.recs = st.recs[:0]
	clear(st.domains)
	st.domains = st.domains[:0]
	st.errBody = st.errBody[:0]
}

// refusal is a stage's "no" to an event request: the counted reason (the label of
// collector_events_rejected_total), the status and the message of the {"error": msg} answer. The
// zero refusal lets the request go on. msg never holds request data.
type refusal struct {
	reason string
	status int
	msg    string
}

// refused reports whether r stops the request.
func (r refusal) refused() bool { return r.status != 0 }

// event answers one /api/event request. accept runs the stages; a refusal from any of them is
// counted and answered here, in one place.
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
	if r := s.accept(ctx, st, start); r.refused() {
		s.m.reject(r.reason)
		s.fail(ctx, st, r.status, r.msg)
	}
}

// accept is the event path, stage by stage: method, body, domains, rate limits, bot filter,
// visitor id, row, spool. It answers 202 itself (stored, or dropped by the bot filter) and
// returns a refusal for every other answer.
func (s *Server) accept(ctx *fasthttp.RequestCtx, st *eventState, start time.Time) refusal {
	origin, originWS := s.allowOrigin(ctx)
	if ctx.IsOptions() {
		return s.preflight(ctx, origin, originWS)
	}
	if !ctx.IsPost() {
		ctx.Response.Header.Set("Allow", "POST, OPTIONS")
		return refusal{rejectMethod, fasthttp.StatusMethodNotAllowed, "method must be POST"}
	}
	st.hot.received.Add(1)

	page, r := s.decode(ctx, st)
	if r.refused() {
		return r
	}
	ws, r := s.workspaceOf(st, &page, origin, originWS)
	if r.refused() {
		return r
	}
	// Client address: used for the rate limits, the bot filter, geo and the visitor id, then gone.
	h := &ctx.Request.Header
	ip := clientAddr(s.cfg.Resolver, peerAddr(ctx), h)
	if r := s.limit(ip, ws, start); r.refused() {
		return r
	}
	uaRaw := h.UserAgent()
	ua := s.cfg.UA.Parse(uaRaw)
	ref := enrich.ParseReferrer(st.beacon.Referrer, page.Hostname)
	if reason := s.botCheck(h, uaRaw, &ua, ref.Host, ip); reason != "" {
		s.m.drop(reason)
		ctx.Response.Header.Set("X-Collector-Dropped", reason)
		plain(ctx, fasthttp.StatusAccepted, "ok")
		return refusal{}
	}
	now := s.stamp(start)
	daySalt, err := s.cfg.Salts.Salt(now)
	if err != nil {
		s.throttledError("cannot make a visitor id: no salt", err)
		return refusal{rejectSalt, fasthttp.StatusServiceUnavailable, "temporarily unavailable"}
	}
	fillEvent(&st.ev, ws, &st.beacon, &page, &ref, &ua, s.cfg.Geo.Lookup(ip), now)
	if r := s.store(st, ws, daySalt, ip, uaRaw); r.refused() {
		return r
	}
	st.hot.accepted.Add(uint64(len(st.recs)))
	plain(ctx, fasthttp.StatusAccepted, "ok")
	return refusal{}
}

// decode checks the content type and size of the body, decodes it into st.beacon and parses the
// page URL.
func (s *Server) decode(ctx *fasthttp.RequestCtx, st *eventState) (enrich.Page, refusal) {
	if !acceptableContentType(ctx.Request.Header.ContentType()) {
		return enrich.Page{}, refusal{rejectBadRequest, fasthttp.StatusBadRequest, "content-type: must be text/plain or application/json"}
	}
	body := ctx.Request.Body()
	if len(body) > MaxBodyBytes || ctx.Request.Header.ContentLength() > MaxBodyBytes {
		return enrich.Page{}, refusal{rejectTooLarge, fasthttp.StatusRequestEntityTooLarge, eventTooLarge}
	}
	b := &st.beacon
	if err := b.Decode(body); err != nil {
		return enrich.Page{}, refusal{rejectBadRequest, fasthttp.StatusBadRequest, err.Error()}
	}
	page, err := enrich.ParsePage(b.URL, b.HashMode)
	if err != nil {
		return enrich.Page{}, refusal{rejectBadRequest, fasthttp.StatusBadRequest, "url: " + err.Error()}
	}
	return page, refusal{}
}

// workspaceOf finds the one workspace that every listed domain, the host of the page and the
// Origin (when sent) belong to, and fills st.domains. The host is the one ParsePage read, the
// same that is stored: one parser decides both. Without d the host of u is the domain, as in
// Plausible.
func (s *Server) workspaceOf(st *eventState, page *enrich.Page, origin []byte, originWS *workspace.Workspace) (*workspace.Workspace, refusal) {
	domain := st.beacon.Domain
	if st.beacon.DomainFromURL {
		domain = page.Host
	}
	ws, r := s.matchDomains(st, domain)
	if r.refused() {
		return nil, r
	}
	if len(st.domains) == 1 && page.Host == st.domains[0] {
		// The common case: the page is on the configured domain the event names, which is ws's.
	} else if uws, _, ok := s.cfg.Registry.Match(page.Host); !ok || uws.ID != ws.ID {
		return nil, refusal{rejectForbidden, fasthttp.StatusForbidden, "url: host is not a domain of the workspace of domain"}
	}
	if len(origin) > 0 && (originWS == nil || originWS.ID != ws.ID) {
		return nil, refusal{rejectForbidden, fasthttp.StatusForbidden, "origin: not a domain of the workspace of domain"}
	}
	return ws, refusal{}
}

// limit applies the per-client, then the per-workspace rate limit.
func (s *Server) limit(ip netip.Addr, ws *workspace.Workspace, now time.Time) refusal {
	if !s.cfg.ClientRate.AllowAddr(ip, now) {
		return refusal{rejectRateClient, fasthttp.StatusTooManyRequests, "rate limited"}
	}
	if !s.cfg.WSRate.AllowKey(ws.ID, now) {
		return refusal{rejectRateWS, fasthttp.StatusTooManyRequests, "rate limited"}
	}
	return refusal{}
}

// botCheck asks the bot filter about the request and returns its drop reason, or "".
func (s *Server) botCheck(h *fasthttp.RequestHeader, uaRaw []byte, ua *enrich.UA, referrerHost string, ip netip.Addr) string {
	var purpose []byte
	for _, k := range headerPurposes {
		if purpose = h.PeekCanonical(k); len(purpose) > 0 {
			break
		}
	}
	return s.cfg.Bots.Check(&bot.Request{
		UA: uaRaw, UAReason: &ua.BotReason, ReferrerHost: referrerHost,
		AcceptLanguage: h.PeekCanonical(headerAcceptLanguage), Purpose: purpose, ClientIP: ip,
	})
}

// stamp returns the event's timestamp: the request's start (or Config.Now), in UTC, to the
// millisecond the row keeps.
func (s *Server) stamp(start time.Time) time.Time {
	if s.cfg.Now != nil {
		start = s.cfg.Now()
	}
	return start.UTC().Truncate(time.Millisecond)
}

// fillEvent fills ev with everything but the domain and the visitor id, which store sets per
// domain.
func fillEvent(ev *row.Event, ws *workspace.Workspace, b *Beacon, page *enrich.Page, ref *enrich.Referrer, ua *enrich.UA, geo enrich.Geo, now time.Time) {
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
}

// store encodes one row per domain of st.domains and appends them together: all are stored, in
// one spool append, or none is, so a client that retries a 503 never duplicates the domains
// that went through.
func (s *Server) store(st *eventState, ws *workspace.Workspace, daySalt *salt.Salt, ip netip.Addr, uaRaw []byte) refusal {
	ev := &st.ev
	for _, d := range st.domains {
		ev.Domain = d
		ev.VisitorID = daySalt.VisitorID(ws.ID, d, ip, uaRaw)
		start := len(st.rec)
		st.rec = ev.AppendBinary(st.rec)
		st.recs = append(st.recs, st.rec[start:])
	}
	if err := s.cfg.Spool.AppendAll(st.recs); err != nil {
		s.throttledError("cannot append the event to the spool", err)
		return refusal{rejectSpool, fasthttp.StatusServiceUnavailable, "temporarily unavailable"}
	}
	return refusal{}
}

// matchDomains splits d, looks every entry up and checks that they all belong to one workspace.
// It fills st.domains with the configured domains (deduplicated) and returns the workspace, or a
// refusal (400 for a malformed list, 403 for a domain not configured).
func (s *Server) matchDomains(st *eventState, d string) (*workspace.Workspace, refusal) {
	var ws *workspace.Workspace
	n := 0
	for rest := d; ; {
		part, tail, more := strings.Cut(rest, ",")
		part = strings.TrimSpace(part)
		n++
		switch {
		case part == "":
			return nil, refusal{rejectBadRequest, fasthttp.StatusBadRequest, "domain: empty entry in the list"}
		case n > MaxDomains:
			return nil, refusal{rejectBadRequest, fasthttp.StatusBadRequest, "domain: more than 10 domains"}
		}
		w, conf, ok := s.cfg.Registry.Match(part)
		if !ok {
			return nil, refusal{rejectForbidden, fasthttp.StatusForbidden, "domain: not configured for any workspace"}
		}
		if ws != nil && w.ID != ws.ID {
			return nil, refusal{rejectForbidden, fasthttp.StatusForbidden, "domain: the listed domains belong to different workspaces"}
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
			return ws, refusal{}
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
func (s *Server) preflight(ctx *fasthttp.RequestCtx, origin []byte, ws *workspace.Workspace) refusal {
	if len(origin) > 0 && ws == nil {
		return refusal{rejectForbidden, fasthttp.StatusForbidden, "origin: not configured for any workspace"}
	}
	h := &ctx.Response.Header
	h.Set("Allow", "POST, OPTIONS")
	if ws != nil {
		h.Set("Access-Control-Allow-Methods", "POST")
		h.Set("Access-Control-Allow-Headers", "Content-Type")
		h.Set("Access-Control-Max-Age", "86400")
	}
	ctx.SetStatusCode(fasthttp.StatusNoContent)
	return refusal{}
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
