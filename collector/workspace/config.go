// Package workspace loads the workspaces file (tiers and the domains of each workspace) and answers,
// without locks, which workspace a domain belongs to.
//
// # Domains
//
// Domains are normalised when the file is loaded and when they are looked up: ASCII lower case, no
// port, no trailing dot. Internationalised domains must be written in punycode (xn--...); they are
// kept as given, never converted.
//
// A leading "www." is treated as the same site: a workspace that configures acme.example also
// receives events for www.acme.example, and one that configures www.acme.example also receives
// events for acme.example. A domain configured explicitly always wins over such an alias, so two
// workspaces may own acme.example and www.acme.example separately. Two workspaces that configure
// the same domain explicitly are an error.
package workspace

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// MaxRetentionDays is the longest retention a tier may set: ten years.
const MaxRetentionDays = 3650

// maxIDLen bounds workspace ids and tier names; they become a ClickHouse column value and a label.
const maxIDLen = 64

// maxFileBytes bounds the workspaces file; a larger file is rejected rather than read.
const maxFileBytes = 16 << 20

// Workspace is one tenant: its id, tier, the retention its tier gives, and its configured domains
// (normalised, in file order). A Workspace returned by Lookup shares its Domains slice with the
// registry's snapshot; callers must not modify it.
type Workspace struct {
	ID            string
	Tier          string
	RetentionDays uint16
	Domains       []string
}

// Snapshot is one loaded, validated workspaces file. It is immutable and safe for concurrent use.
type Snapshot struct {
	workspaces []Workspace
	byDomain   map[string]entry
	tiers      map[string]uint16
}

// entry is what a domain (configured or www. alias) maps to.
type entry struct {
	ws     *Workspace
	domain string // the configured domain that matched
}

// fileConfig is the YAML layout of the workspaces file (DESIGN 3.1).
type fileConfig struct {
	Tiers      map[string]fileTier `yaml:"tiers"`
	Workspaces []fileWorkspace     `yaml:"workspaces"`
}

type fileTier struct {
	RetentionDays *int `yaml:"retention_days"`
}

type fileWorkspace struct {
	ID      string   `yaml:"id"`
	Tier    string   `yaml:"tier"`
	Domains []string `yaml:"domains"`
}

// LoadFile reads and validates the workspaces file at path. The error lists every problem found.
func LoadFile(path string) (*Snapshot, error) {
	data, err := readFile(path)
	if err != nil {
		return nil, err
	}
	s, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("invalid workspaces file %s: %w", path, err)
	}
	return s, nil
}

func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read workspaces file: %w", err)
	}
	defer f.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(io.LimitReader(f, maxFileBytes+1)); err != nil {
		return nil, fmt.Errorf("cannot read workspaces file %s: %w", path, err)
	}
	if buf.Len() > maxFileBytes {
		return nil, fmt.Errorf("workspaces file %s is larger than %d bytes", path, maxFileBytes)
	}
	return buf.Bytes(), nil
}

// Parse validates a workspaces file's content and returns its snapshot. It reports every problem
// at once (joined with errors.Join), each naming the workspace, tier or domain concerned; unknown
// keys are errors so that typos do not pass silently.
func Parse(data []byte) (*Snapshot, error) {
	var fc fileConfig
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&fc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("the file is empty: it must define tiers and workspaces")
		}
		return nil, fmt.Errorf("cannot parse YAML: %w", err)
	}
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	s := &Snapshot{byDomain: map[string]entry{}, tiers: map[string]uint16{}}
	if len(fc.Tiers) == 0 {
		add("no tiers defined")
	}
	tierNames := make([]string, 0, len(fc.Tiers))
	for name := range fc.Tiers {
		tierNames = append(tierNames, name)
	}
	sort.Strings(tierNames)
	for _, name := range tierNames {
		t := fc.Tiers[name]
		if !validID(name) {
			add("tier %q: name must be 1-%d characters of a-z, A-Z, 0-9, '_' or '-'", name, maxIDLen)
		}
		switch {
		case t.RetentionDays == nil:
			add("tier %q: retention_days is missing", name)
		case *t.RetentionDays < 1 || *t.RetentionDays > MaxRetentionDays:
			add("tier %q: retention_days %d is outside 1..%d", name, *t.RetentionDays, MaxRetentionDays)
		default:
			s.tiers[name] = uint16(*t.RetentionDays)
		}
	}
	if len(fc.Workspaces) == 0 {
		add("no workspaces defined")
	}

	explicit := map[string]string{} // normalised domain -> workspace id
	ids := map[string]int{}
	s.workspaces = make([]Workspace, 0, len(fc.Workspaces))
	for i, fw := range fc.Workspaces {
		label := fmt.Sprintf("workspace %d (%q)", i+1, fw.ID)
		switch {
		case fw.ID == "":
			add("workspace %d: id is missing", i+1)
		case !validID(fw.ID):
			add("%s: id must be 1-%d characters of a-z, A-Z, 0-9, '_' or '-'", label, maxIDLen)
		default:
			if j, dup := ids[fw.ID]; dup {
				add("%s: id already used by workspace %d", label, j)
			}
			ids[fw.ID] = i + 1
		}
		days, ok := s.tiers[fw.Tier]
		switch {
		case fw.Tier == "":
			add("%s: tier is missing", label)
		case !ok:
			if _, defined := fc.Tiers[fw.Tier]; !defined {
				add("%s: unknown tier %q", label, fw.Tier)
			}
		}
		if len(fw.Domains) == 0 {
			add("%s: domains is empty", label)
		}
		ws := Workspace{ID: fw.ID, Tier: fw.Tier, RetentionDays: days}
		seen := map[string]bool{}
		for _, raw := range fw.Domains {
			d, err := normaliseConfigured(raw)
			if err != nil {
				add("%s: domain %q: %v", label, raw, err)
				continue
			}
			if seen[d] {
				add("%s: domain %q is listed twice", label, d)
				continue
			}
			seen[d] = true
			if other, dup := explicit[d]; dup {
				add("%s: domain %q already belongs to workspace %q", label, d, other)
				continue
			}
			explicit[d] = fw.ID
			ws.Domains = append(ws.Domains, d)
		}
		s.workspaces = append(s.workspaces, ws)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	// Explicit domains first, then www. aliases where no explicit domain exists.
	for i := range s.workspaces {
		ws := &s.workspaces[i]
		for _, d := range ws.Domains {
			s.byDomain[d] = entry{ws: ws, domain: d}
		}
	}
	for i := range s.workspaces {
		ws := &s.workspaces[i]
		for _, d := range ws.Domains {
			alias, ok := wwwAlias(d)
			if !ok {
				continue
			}
			if _, taken := s.byDomain[alias]; !taken {
				s.byDomain[alias] = entry{ws: ws, domain: d}
			}
		}
	}
	return s, nil
}

// wwwAlias returns the www. twin of d: without the prefix when d has it, with it otherwise. A
// single-label domain (localhost) and "www.<tld>" have no alias.
func wwwAlias(d string) (string, bool) {
	if rest, ok := strings.CutPrefix(d, "www."); ok {
		if !strings.Contains(rest, ".") {
			return "", false
		}
		return rest, true
	}
	if !strings.Contains(d, ".") {
		return "", false
	}
	return "www." + d, true
}

// normaliseConfigured normalises a domain from the file and checks that it is a plain host name.
func normaliseConfigured(raw string) (string, error) {
	if strings.Contains(raw, "://") || strings.ContainsAny(raw, "/?#@ \t*") {
		return "", errors.New("must be a bare host name (no scheme, path, wildcard or spaces)")
	}
	var buf [maxDomainLen]byte
	d, ok := normalise(buf[:0], raw)
	if !ok {
		return "", fmt.Errorf("must be a host name of at most %d characters: letters, digits, '-' and '.' (punycode for IDNs)", maxDomainLen)
	}
	return string(d), nil
}

// Lookup returns the workspace that owns domain (normalised first; www. aliases apply).
func (s *Snapshot) Lookup(domain string) (Workspace, bool) {
	e, ok := s.lookup(domain)
	if !ok {
		return Workspace{}, false
	}
	return *e.ws, true
}

// Match is Lookup that also returns the configured domain that matched (acme.example for an event
// sent for www.acme.example when only acme.example is configured). It does not allocate.
func (s *Snapshot) Match(domain string) (ws *Workspace, configured string, ok bool) {
	e, ok := s.lookup(domain)
	if !ok {
		return nil, "", false
	}
	return e.ws, e.domain, true
}

func (s *Snapshot) lookup(domain string) (entry, bool) {
	if s == nil {
		return entry{}, false
	}
	if e, ok := s.byDomain[domain]; ok { // already normal: the common case
		return e, true
	}
	var buf [maxDomainLen]byte
	d, ok := normalise(buf[:0], domain)
	if !ok {
		return entry{}, false
	}
	e, ok := s.byDomain[string(d)]
	return e, ok
}

// Workspaces returns the workspaces in file order. The slice is shared; do not modify it.
func (s *Snapshot) Workspaces() []Workspace { return s.workspaces }

// Len returns the number of workspaces.
func (s *Snapshot) Len() int { return len(s.workspaces) }

// Tiers returns a copy of the tier name → retention days map.
func (s *Snapshot) Tiers() map[string]uint16 {
	m := make(map[string]uint16, len(s.tiers))
	for k, v := range s.tiers {
		m[k] = v
	}
	return m
}

// maxDomainLen is the longest DNS name.
const maxDomainLen = 253

// normalise appends the normal form of host to dst: ASCII lower case, port and trailing dot
// removed. It reports false for anything that is not a host name made of letters, digits, '-',
// '_' and '.' with non-empty labels, or is longer than maxDomainLen.
func normalise(dst []byte, host string) ([]byte, bool) {
	// Strip a port: "host:8080". Bracketed IPv6 literals are not domains.
	if i := strings.LastIndexByte(host, ':'); i >= 0 {
		port := host[i+1:]
		if len(port) == 0 || len(port) > 5 {
			return dst, false
		}
		n := 0
		for j := 0; j < len(port); j++ {
			if port[j] < '0' || port[j] > '9' {
				return dst, false
			}
			n = n*10 + int(port[j]-'0')
		}
		if n > 65535 {
			return dst, false
		}
		host = host[:i]
	}
	host = strings.TrimSuffix(host, ".")
	if len(host) == 0 || len(host) > maxDomainLen {
		return dst, false
	}
	prevDot := true
	for i := 0; i < len(host); i++ {
		c := host[i]
		switch {
		case c >= 'A' && c <= 'Z':
			c += 'a' - 'A'
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_':
		case c == '.':
			if prevDot {
				return dst, false
			}
		default:
			return dst, false
		}
		prevDot = c == '.'
		dst = append(dst, c)
	}
	return dst, true
}

// Normalise returns the normal form of a host name as the registry compares it, and false when it
// is not a valid host name.
func Normalise(host string) (string, bool) {
	var buf [maxDomainLen]byte
	d, ok := normalise(buf[:0], host)
	if !ok {
		return "", false
	}
	return string(d), true
}

func validID(s string) bool {
	if len(s) == 0 || len(s) > maxIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
