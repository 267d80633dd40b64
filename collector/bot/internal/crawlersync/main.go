// Command crawlersync checks the collector's bot detection against the
// maintained crawler-user-agents list (https://github.com/monperrus/crawler-user-agents)
// and, with -write, appends the plain-name patterns it misses to
// collector/bot/crawlers.txt. `make crawlers` fetches the pinned upstream
// package and runs it from the repository root.
//
// Every upstream example user agent goes through bot.Filter.Check with the
// default configuration, which judges it with bot.AgentReason, the verdict
// the collector caches per user agent, so the detection rate it reports is
// the production one for the binary it was built with. Markers it writes
// take effect at the next build, because crawlers.txt is embedded.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/kyomi/collector/collector/bot"
)

// minMarkerLen is the shortest marker written: shorter names ("bot", "go/")
// occur inside too many unrelated tokens to be specific.
const minMarkerLen = 4

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "crawlersync:", err)
		os.Exit(1)
	}
}

// entry is one pattern of crawler-user-agents.json; the fields not listed
// (description, tags, addition_date) are not used.
type entry struct {
	Pattern   string   `json:"pattern"`
	URL       string   `json:"url"`
	Instances []string `json:"instances"`
}

// missed is an upstream pattern with at least one example user agent that
// the collector keeps.
type missed struct {
	entry
	missed []string // the instances not detected, in upstream order
}

// verdict is what becomes of a missed pattern: a marker to add, a marker
// already in the list, or a reason a human has to look at it.
type verdict struct {
	pattern string
	marker  string // lower-case literal; empty when the pattern is not one
	listed  bool   // marker is already in the list file
	refusal string // why the pattern cannot be added automatically; empty when it can
}

func run(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("crawlersync", flag.ContinueOnError)
	fs.SetOutput(stdout)
	upstream := fs.String("upstream", "", "path of crawler-user-agents.json from the crawler-user-agents package (required)")
	source := fs.String("source", "crawler-user-agents", "name and version of the upstream list, written in the comment above added markers")
	listPath := fs.String("list", "collector/bot/crawlers.txt", "crawler marker list that -write appends to; also read to skip markers it already has")
	browsersPath := fs.String("browsers", "testdata/ua/browsers.txt", "real browser user agents, one per line; a marker that occurs in any of them is never written")
	write := fs.Bool("write", false, "append the new markers to -list; without it only report what would be added")
	if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
		return nil
	} else if err != nil {
		return err // already printed with the usage
	}
	if *upstream == "" {
		return errors.New("-upstream is required")
	}

	entries, err := readUpstream(*upstream)
	if err != nil {
		return err
	}
	listTxt, err := os.ReadFile(*listPath)
	if err != nil {
		return fmt.Errorf("cannot read crawler list: %w", err)
	}
	browsers, err := readLines(*browsersPath)
	if err != nil {
		return fmt.Errorf("cannot read browser corpus: %w", err)
	}
	r, err := reconcile(entries, string(listTxt), browsers)
	if err != nil {
		return err
	}
	if *write && len(r.add) > 0 {
		if err := appendMarkers(*listPath, listTxt, *source, r.add); err != nil {
			return err
		}
	}
	r.print(stdout, *source, *listPath, *write)
	return nil
}

// report is the outcome of comparing the collector with the upstream list.
type report struct {
	patterns int       // upstream patterns
	total    int       // upstream example user agents
	detected int       // of those, dropped by the collector's bot filter
	misses   []missed  // patterns with missed examples, sorted by pattern
	add      []string  // new markers, sorted and unique
	listed   []verdict // literals already in the list file but not in this binary
	refused  []verdict // patterns that need a human
	after    int       // detected once add is in the embedded list
}

// reconcile checks every upstream example against the production bot filter
// and decides which missed patterns become markers of the list listTxt.
func reconcile(entries []entry, listTxt string, browsers []string) (report, error) {
	filter, err := bot.NewFilter(bot.Config{})
	if err != nil {
		return report{}, fmt.Errorf("cannot make bot filter: %w", err)
	}
	r := report{patterns: len(entries)}
	r.total, r.detected, r.misses = check(entries, filter)
	markers, exceptions := parseList(listTxt)
	for _, v := range judge(r.misses, markers, browsers) {
		switch {
		case v.refusal != "":
			r.refused = append(r.refused, v)
		case v.listed:
			r.listed = append(r.listed, v)
		case !slices.Contains(r.add, v.marker):
			r.add = append(r.add, v.marker)
		}
	}
	slices.Sort(r.add)
	r.after = r.detected + projected(r.misses, r.add, exceptions)
	return r, nil
}

func (r report) print(w io.Writer, source, listPath string, written bool) {
	fmt.Fprintf(w, "upstream %s: %d patterns, %d example user agents\n", source, r.patterns, r.total)
	fmt.Fprintf(w, "detected: %d of %d (%s)\n", r.detected, r.total, percent(r.detected, r.total))
	fmt.Fprintf(w, "patterns with missed user agents: %d\n", len(r.misses))
	for _, m := range r.misses {
		fmt.Fprintf(w, "  %-40s %d of %d missed, e.g. %s\n", m.Pattern, len(m.missed), len(m.Instances), m.missed[0])
	}
	verb := "markers to add (run with -write to append)"
	if written {
		verb = "markers appended to " + listPath
	}
	fmt.Fprintf(w, "%s: %d\n", verb, len(r.add))
	for _, m := range r.add {
		fmt.Fprintf(w, "  %s\n", m)
	}
	if len(r.add) > 0 {
		fmt.Fprintf(w, "detected with these markers, once rebuilt: %d of %d (%s)\n", r.after, r.total, percent(r.after, r.total))
	}
	if len(r.listed) > 0 {
		fmt.Fprintf(w, "already in %s, not yet in this binary (rebuild): %d\n", listPath, len(r.listed))
		for _, v := range r.listed {
			fmt.Fprintf(w, "  %-40s %s\n", v.pattern, v.marker)
		}
	}
	fmt.Fprintf(w, "needs a human: %d patterns\n", len(r.refused))
	for _, v := range r.refused {
		fmt.Fprintf(w, "  %-40s %s\n", v.pattern, v.refusal)
	}
}

// readUpstream decodes crawler-user-agents.json.
func readUpstream(path string) ([]entry, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read upstream list: %w", err)
	}
	var entries []entry
	if err := json.Unmarshal(data, &entries); err != nil {
		return nil, fmt.Errorf("cannot decode upstream list %s: %w", path, err)
	}
	return entries, nil
}

// readLines returns the non-empty lines of a corpus file that are not "#"
// comments, as the corpus tests read them.
func readLines(path string) ([]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 64<<10)
	for sc.Scan() {
		if line := sc.Text(); line != "" && line[0] != '#' {
			out = append(out, line)
		}
	}
	return out, sc.Err()
}

// check runs every upstream instance through the filter and returns the
// number of instances, how many were detected, and the patterns with
// missed instances sorted by pattern.
func check(entries []entry, f *bot.Filter) (total, detected int, misses []missed) {
	for _, e := range entries {
		m := missed{entry: e}
		for _, ua := range e.Instances {
			total++
			if f.Check(&bot.Request{UA: []byte(ua)}) != "" {
				detected++
			} else {
				m.missed = append(m.missed, ua)
			}
		}
		if len(m.missed) > 0 {
			misses = append(misses, m)
		}
	}
	slices.SortFunc(misses, func(a, b missed) int { return strings.Compare(a.Pattern, b.Pattern) })
	return total, detected, misses
}

// parseList returns the markers and the "!" exceptions of a crawlers.txt.
func parseList(txt string) (markers, exceptions map[string]bool) {
	markers, exceptions = map[string]bool{}, map[string]bool{}
	for _, line := range strings.Split(txt, "\n") {
		line = strings.TrimRight(line, "\r")
		switch {
		case line == "" || line[0] == '#':
		case line[0] == '!':
			exceptions[line[1:]] = true
		default:
			markers[line] = true
		}
	}
	return markers, exceptions
}

// judge decides for each missed pattern whether its literal can become a
// marker. A marker is refused when it is shorter than minMarkerLen, cannot
// be written as a list line, or occurs in any browser user agent; the
// browser check ignores the list's "!" exceptions, so it is stricter than
// the matcher.
func judge(misses []missed, markers map[string]bool, browsers []string) []verdict {
	lowBrowsers := make([]string, len(browsers))
	for i, b := range browsers {
		lowBrowsers[i] = strings.ToLower(b)
	}
	out := make([]verdict, 0, len(misses))
	for _, m := range misses {
		v := verdict{pattern: m.Pattern}
		lit, ok := literal(m.Pattern)
		switch {
		case !ok:
			v.refusal = "regular expression, not a plain name"
		default:
			v.marker = strings.ToLower(lit)
			v.refusal = refuse(v.marker, browsers, lowBrowsers)
			v.listed = v.refusal == "" && markers[v.marker]
		}
		if v.refusal != "" && m.URL != "" {
			v.refusal += " (" + m.URL + ")"
		}
		out = append(out, v)
	}
	return out
}

// refuse returns why marker cannot be added, or "" when it can;
// lowBrowsers[i] is browsers[i] lower-cased.
func refuse(marker string, browsers, lowBrowsers []string) string {
	switch {
	case len(marker) < minMarkerLen:
		return fmt.Sprintf("marker %q is shorter than %d bytes", marker, minMarkerLen)
	case strings.TrimSpace(marker) != marker:
		return fmt.Sprintf("marker %q has surrounding space", marker)
	case marker[0] == '#' || marker[0] == '!':
		return fmt.Sprintf("marker %q would read as a comment or exception line", marker)
	}
	n, example := 0, ""
	for i, b := range lowBrowsers {
		if strings.Contains(b, marker) {
			if n == 0 {
				example = browsers[i]
			}
			n++
		}
	}
	if n > 0 {
		return fmt.Sprintf("marker %q occurs in %d real browser user agents (false positive), e.g. %s", marker, n, example)
	}
	return ""
}

// literal returns the text that pattern matches when it is a plain literal
// once simple escapes (a backslash before punctuation, such as `\.` `\-`
// `\/`) are undone. It reports false for any other regular-expression
// syntax: unescaped metacharacters, anchors, classes and escapes such as
// `\d` or `\b`.
func literal(pattern string) (string, bool) {
	var b strings.Builder
	for i := 0; i < len(pattern); i++ {
		c := pattern[i]
		switch {
		case c == '\\':
			if i+1 == len(pattern) {
				return "", false
			}
			n := pattern[i+1]
			if !isASCIIPunct(n) {
				return "", false
			}
			b.WriteByte(n)
			i++
		case strings.IndexByte(`.^$*+?()[]{}|`, c) >= 0, c < ' ', c == 0x7f:
			return "", false
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), b.Len() > 0
}

// isASCIIPunct reports whether c is printable ASCII punctuation or a space,
// the characters whose backslash escape means the character itself.
func isASCIIPunct(c byte) bool {
	return ' ' <= c && c < 0x7f &&
		!('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9')
}

// projected returns how many missed instances the new markers would catch,
// matching as the collector does: lower-cased, with exception tokens removed.
func projected(misses []missed, add []string, exceptions map[string]bool) int {
	n := 0
	for _, m := range misses {
		for _, ua := range m.missed {
			low := strings.ToLower(ua)
			for e := range exceptions {
				low = strings.ReplaceAll(low, e, "")
			}
			if slices.ContainsFunc(add, func(mk string) bool { return strings.Contains(low, mk) }) {
				n++
			}
		}
	}
	return n
}

// appendMarkers appends add, under a comment naming source, to the list
// file whose current content is old.
func appendMarkers(path string, old []byte, source string, add []string) error {
	var b bytes.Buffer
	if len(old) > 0 && old[len(old)-1] != '\n' {
		b.WriteByte('\n')
	}
	fmt.Fprintf(&b, "# From %s by `make crawlers`: its plain-name patterns whose examples the lines above missed\n", source)
	for _, m := range add {
		b.WriteString(m)
		b.WriteByte('\n')
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return fmt.Errorf("cannot open crawler list for appending: %w", err)
	}
	if _, err := f.Write(b.Bytes()); err != nil {
		f.Close()
		return fmt.Errorf("cannot append to crawler list %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("cannot append to crawler list %s: %w", path, err)
	}
	return nil
}

func percent(n, total int) string {
	if total == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.1f%%", 100*float64(n)/float64(total))
}
