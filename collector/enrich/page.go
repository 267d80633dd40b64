package enrich

import (
	"errors"
	"net/url"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Page is what the collector keeps of an event URL. Strings may alias the
// rawURL given to ParsePage (no copies are made unless decoding needs one):
// callers that keep a Page beyond the input's lifetime must own the input.
type Page struct {
	// Host is the host as a browser reads it from the URL (WHATWG: a backslash ends the authority
	// like a slash, the last '@' ends the user info), lower case, without port and trailing dot,
	// "www." kept. It is the host the domain check sees, so the check and the stored Hostname
	// come from this one parse.
	Host         string
	Hostname     string // Host without "www."
	Pathname     string // path without query and path parameters (";..."), percent-decoded; "/" when empty; plus "#fragment" in hash mode
	UTMSource    string // utm_source, else source, else ref (Plausible reads all three as the tag)
	UTMMedium    string
	UTMCampaign  string
	UTMContent   string
	UTMTerm      string
	ClickIDParam string // name of the first click id parameter seen, never its value
	// Gclid and Msclkid report a gclid or msclkid parameter (their values are never kept): with
	// a Google or Bing source and no utm_medium they set the medium, as Plausible does.
	Gclid, Msclkid bool
}

// Errors returned by ParsePage. They name the problem without echoing the
// URL, which may carry personal data in its query string.
var (
	ErrURLScheme = errors.New("url must be http or https")
	ErrURLHost   = errors.New("url has no valid host")
	ErrURLEmpty  = errors.New("url is empty")
)

// clickIDParams are the advertising click id parameters whose presence (never
// value) is recorded, in the order they are preferred when several appear.
var clickIDParams = [...]string{
	"gclid", "fbclid", "msclkid", "ttclid", "twclid", "li_fat_id", "dclid", "gbraid", "wbraid",
}

// ParsePage parses the event URL; hashMode keeps the fragment in Pathname.
// Errors name the problem ("url must be http or https", ...). Query strings
// other than utm_* and click ids are dropped, and so are path parameters
// (";jsessionid=..."), which carry session tokens as often as query strings
// do; UTM values are query-unescaped (invalid escapes are kept verbatim). The
// path is percent-decoded as Plausible decodes it (URI.decode) and trailing
// white space removed; a path whose escapes are invalid or decode to invalid
// UTF-8 or a control character is kept as sent. ParsePage is safe on any input
// and allocates only when the host has upper case letters or the path or a
// value is escaped.
func ParsePage(rawURL string, hashMode bool) (Page, error) {
	var p Page
	s := strings.TrimSpace(rawURL)
	if s == "" {
		return p, ErrURLEmpty
	}
	rest, ok := cutScheme(s)
	if !ok {
		return p, ErrURLScheme
	}
	host, rest := splitAuthority(rest)
	if host == "" {
		return p, ErrURLHost
	}
	p.Host = host
	p.Hostname = strings.TrimPrefix(host, "www.")
	if p.Hostname == "" || !validHost(p.Hostname) {
		return Page{}, ErrURLHost
	}

	path, query, fragment := rest, "", ""
	if i := strings.IndexByte(path, '#'); i >= 0 {
		path, fragment = path[:i], path[i+1:]
	}
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path, query = path[:i], path[i+1:]
	}
	if i := strings.IndexByte(path, ';'); i >= 0 {
		path = path[:i]
	}
	if path == "" {
		path = "/"
	}
	p.Pathname = decodePath(path)
	if hashMode && fragment != "" {
		// In hash routing the route lives in the fragment; a query string
		// inside the fragment ("#/a?utm_source=x") carries the route's UTM
		// parameters and is dropped from Pathname like any query, and so are
		// the route's path parameters.
		route, fq, _ := strings.Cut(fragment, "?")
		if i := strings.IndexByte(route, ';'); i >= 0 {
			route = route[:i]
		}
		if route != "" {
			if p.Pathname == path && !strings.ContainsRune(route, '%') {
				p.Pathname = joinHash(path, route, rest)
			} else {
				p.Pathname = p.Pathname + "#" + decodePath(route)
			}
		}
		if query == "" {
			query = fq
		}
	}
	if p.Pathname == "" {
		p.Pathname = "/"
	}
	var source, ref string
	parseQuery(&p, query, &source, &ref)
	if p.UTMSource == "" {
		p.UTMSource = source
	}
	if p.UTMSource == "" {
		p.UTMSource = ref
	}
	return p, nil
}

// decodePath percent-decodes a path or route as Elixir's URI.decode does (every %XX, "+" kept)
// and removes trailing white space. It returns s itself, trimmed, when s has no escape or when the
// decoding would not be valid UTF-8 free of control characters (such a path is stored as sent).
func decodePath(s string) string {
	if strings.IndexByte(s, '%') < 0 {
		return trimRightSpace(s)
	}
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '%' {
			out = append(out, c)
			continue
		}
		if i+2 >= len(s) || !isHex(s[i+1]) || !isHex(s[i+2]) {
			return trimRightSpace(s)
		}
		out = append(out, unhex(s[i+1])<<4|unhex(s[i+2]))
		i += 2
	}
	if !utf8.Valid(out) {
		return trimRightSpace(s)
	}
	for _, r := range string(out) {
		if r < 0x20 || r == 0x7f || r >= 0x80 && r < 0xa0 {
			return trimRightSpace(s)
		}
	}
	return trimRightSpace(string(out))
}

// trimRightSpace removes trailing white space, as Elixir's String.trim_trailing.
func trimRightSpace(s string) string {
	return strings.TrimRightFunc(s, unicode.IsSpace)
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c >= '0' && c <= '9':
		return c - '0'
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

// joinHash returns path+"#"+route, as a substring of rest when they are
// contiguous there (no allocation).
func joinHash(path, route, rest string) string {
	if len(path) <= len(rest) && strings.HasPrefix(rest, path) {
		n := len(path) + 1 + len(route)
		if n <= len(rest) && rest[len(path)] == '#' {
			return rest[:n]
		}
	}
	return path + "#" + route
}

// cutScheme removes a case-insensitive "http://" or "https://" prefix.
func cutScheme(s string) (string, bool) {
	switch {
	case len(s) >= 7 && strings.EqualFold(s[:7], "http://"):
		return s[7:], true
	case len(s) >= 8 && strings.EqualFold(s[:8], "https://"):
		return s[8:], true
	}
	return "", false
}

// splitAuthority splits "user@Host:port/path?q" into the lower-cased host
// without user info, port and trailing dot, and the rest starting at the
// first '/', '?' or '#'.
func splitAuthority(s string) (host, rest string) {
	end := strings.IndexAny(s, "/?#\\")
	if end < 0 {
		end = len(s)
	}
	auth := s[:end]
	rest = s[end:]
	if strings.IndexByte(rest, '\\') == 0 {
		// Browsers treat a backslash after the authority as a slash.
		rest = "/" + rest[1:]
	}
	if i := strings.LastIndexByte(auth, '@'); i >= 0 {
		auth = auth[i+1:]
	}
	if strings.HasPrefix(auth, "[") {
		if i := strings.IndexByte(auth, ']'); i >= 0 {
			auth = auth[:i+1]
		}
	} else if i := strings.LastIndexByte(auth, ':'); i >= 0 {
		auth = auth[:i]
	}
	auth = strings.TrimSuffix(auth, ".")
	return lowerASCII(auth), rest
}

// lowerASCII lower-cases ASCII letters, allocating only when there are upper
// case ones.
func lowerASCII(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; 'A' <= c && c <= 'Z' {
			return strings.ToLower(s)
		}
	}
	return s
}

// parseQuery reads the UTM parameters and click ids of q into p, and the source and ref
// parameters (the other spellings of utm_source) into source and ref.
func parseQuery(p *Page, q string, source, ref *string) {
	for q != "" {
		var kv string
		kv, q, _ = strings.Cut(q, "&")
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "source":
			if *source == "" {
				*source = unescape(v)
			}
			continue
		case "ref":
			if *ref == "" {
				*ref = unescape(v)
			}
			continue
		case "gclid":
			p.Gclid = true
		case "msclkid":
			p.Msclkid = true
		}
		if len(k) > 4 && k[:4] == "utm_" {
			var dst *string
			switch k[4:] {
			case "source":
				dst = &p.UTMSource
			case "medium":
				dst = &p.UTMMedium
			case "campaign":
				dst = &p.UTMCampaign
			case "content":
				dst = &p.UTMContent
			case "term":
				dst = &p.UTMTerm
			}
			if dst != nil && *dst == "" {
				*dst = unescape(v)
			}
			continue
		}
		if p.ClickIDParam == "" {
			for _, c := range clickIDParams {
				if k == c {
					p.ClickIDParam = c
					break
				}
			}
		}
	}
}

// unescape query-unescapes v, keeping it verbatim when it is not validly
// escaped; it allocates only when v contains '%' or '+'.
func unescape(v string) string {
	if strings.IndexByte(v, '%') < 0 && strings.IndexByte(v, '+') < 0 {
		return v
	}
	u, err := url.QueryUnescape(v)
	if err != nil {
		return v
	}
	return u
}
