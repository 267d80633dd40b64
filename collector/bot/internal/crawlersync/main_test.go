package main

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The fixture testdata/upstream.json has, against the embedded crawler list:
//   - Googlebot: both examples detected;
//   - Zorblatt\-Fetch\.io: one example detected by "+https", one missed;
//     zorblatt-fetch\.io: the same marker from a second pattern;
//   - Qwerp\-Agent: missed, and already in testdata/crawlers.txt;
//   - Blorp(er)?Agent: missed, a regular expression;
//   - Qz\/: missed, too short;
//   - Firefox\/115\.0: missed, a real browser that upstream misfiled, so
//     its marker would match testdata/browsers.txt.
const (
	fixtureUpstream = "testdata/upstream.json"
	fixtureList     = "testdata/crawlers.txt"
	fixtureBrowsers = "testdata/browsers.txt"
)

// reconcileFixture runs reconcile over the fixture files.
func reconcileFixture(t *testing.T) report {
	t.Helper()
	entries, err := readUpstream(fixtureUpstream)
	if err != nil {
		t.Fatal(err)
	}
	list, err := os.ReadFile(fixtureList)
	if err != nil {
		t.Fatal(err)
	}
	browsers, err := readLines(fixtureBrowsers)
	if err != nil {
		t.Fatal(err)
	}
	r, err := reconcile(entries, string(list), browsers)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestReconcileCounts(t *testing.T) {
	r := reconcileFixture(t)
	if r.patterns != 7 || r.total != 9 || r.detected != 3 {
		t.Fatalf("patterns, examples, detected = %d, %d, %d; want 7, 9, 3", r.patterns, r.total, r.detected)
	}
	var missedPatterns []string
	missedExamples := 0
	for _, m := range r.misses {
		missedPatterns = append(missedPatterns, m.Pattern)
		missedExamples += len(m.missed)
	}
	want := []string{`Blorp(er)?Agent`, `Firefox\/115\.0`, `Qwerp\-Agent`, `Qz\/`, `Zorblatt\-Fetch\.io`, `zorblatt-fetch\.io`}
	if !slices.Equal(missedPatterns, want) {
		t.Errorf("missed patterns = %q, want %q", missedPatterns, want)
	}
	if missedExamples != r.total-r.detected {
		t.Errorf("missed examples = %d, want total-detected = %d", missedExamples, r.total-r.detected)
	}
	if !slices.Equal(r.add, []string{"zorblatt-fetch.io"}) {
		t.Errorf("add = %q, want [zorblatt-fetch.io] once for two patterns", r.add)
	}
	if r.after != 5 {
		t.Errorf("projected detection = %d, want 5 (3 + the two missed zorblatt examples)", r.after)
	}
	if len(r.listed) != 1 || r.listed[0].marker != "qwerp-agent" {
		t.Errorf("listed = %+v, want qwerp-agent only", r.listed)
	}
	refused := map[string]string{}
	for _, v := range r.refused {
		refused[v.pattern] = v.refusal
	}
	for pattern, reason := range map[string]string{
		`Blorp(er)?Agent`: "regular expression",
		`Qz\/`:            "shorter than 4",
		`Firefox\/115\.0`: "false positive",
	} {
		if !strings.Contains(refused[pattern], reason) {
			t.Errorf("refusal of %s = %q, want it to say %q", pattern, refused[pattern], reason)
		}
	}
	if len(refused) != 3 {
		t.Errorf("refused %d patterns, want 3: %v", len(refused), refused)
	}
}

func TestLiteral(t *testing.T) {
	for _, tc := range []struct {
		name, pattern, want string
		ok                  bool
	}{
		{"plain", "bingbot", "bingbot", true},
		{"space", "Yahoo! Slurp", "Yahoo! Slurp", true},
		{"escaped dot and dash", `Mail\.RU\-Bot`, "Mail.RU-Bot", true},
		{"escaped slash", `Googlebot\/`, "Googlebot/", true},
		{"escaped paren", `Rigor\)`, "Rigor)", true},
		{"escaped backslash", `a\\b`, `a\b`, true},
		{"unescaped dot", "archive.org_bot", "", false},
		{"anchor start", "^curl", "", false},
		{"anchor end", "Java$", "", false},
		{"group", "Blorp(er)?Agent", "", false},
		{"class", "[wW]get", "", false},
		{"alternation", "a|b", "", false},
		{"repeat", "bo+t", "", false},
		{"brace", "x{2}", "", false},
		{"digit class", `Bot\d`, "", false},
		{"word boundary", `\bbot`, "", false},
		{"trailing backslash", `bot\`, "", false},
		{"control character", "bot\tx", "", false},
		{"empty", "", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := literal(tc.pattern)
			if got != tc.want || ok != tc.ok {
				t.Errorf("literal(%q) = %q, %v; want %q, %v", tc.pattern, got, ok, tc.want, tc.ok)
			}
		})
	}
}

func TestRefuse(t *testing.T) {
	browsers := []string{"Mozilla/5.0 (Linux; Android 15; CPH2557 Build/AP3A.240617.008; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/142.0.7444.142 Mobile Safari/537.36"}
	low := []string{strings.ToLower(browsers[0])}
	for _, tc := range []struct {
		name, marker, want string
	}{
		{"specific name", "zealbot", ""},
		{"exactly four bytes", "um-x", ""},
		{"too short", "bw/", "shorter than 4"},
		{"android build id", "ap3a.240617.008", "false positive"},
		{"surrounding space", " slurp", "surrounding space"},
		{"comment line", "#tag", "comment or exception"},
		{"exception line", "!bang", "comment or exception"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := refuse(tc.marker, browsers, low)
			if tc.want == "" && got != "" || !strings.Contains(got, tc.want) {
				t.Errorf("refuse(%q) = %q, want %q", tc.marker, got, tc.want)
			}
		})
	}
}

// TestWriteAppendsOnce runs the command twice with -write on a copy of the
// fixture list: the first run appends the one new marker under a comment,
// the second finds it listed and leaves the file alone.
func TestWriteAppendsOnce(t *testing.T) {
	orig, err := os.ReadFile(fixtureList)
	if err != nil {
		t.Fatal(err)
	}
	list := filepath.Join(t.TempDir(), "crawlers.txt")
	if err := os.WriteFile(list, orig, 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"-upstream", fixtureUpstream, "-list", list, "-browsers", fixtureBrowsers,
		"-source", "crawler-user-agents@0.0.1", "-write"}

	var out bytes.Buffer
	if err := run(args, &out); err != nil {
		t.Fatal(err)
	}
	first, err := os.ReadFile(list)
	if err != nil {
		t.Fatal(err)
	}
	want := string(orig) + "# From crawler-user-agents@0.0.1 by `make crawlers`: its plain-name patterns whose examples the lines above missed\n" +
		"zorblatt-fetch.io\n"
	if string(first) != want {
		t.Fatalf("list after -write:\n%s\nwant:\n%s", first, want)
	}
	for _, line := range []string{
		"detected: 3 of 9 (33.3%)",
		"markers appended to " + list + ": 1",
		"detected with these markers, once rebuilt: 5 of 9 (55.6%)",
		"needs a human: 3 patterns",
	} {
		if !strings.Contains(out.String(), line+"\n") {
			t.Errorf("output lacks %q:\n%s", line, out.String())
		}
	}

	out.Reset()
	if err := run(args, &out); err != nil {
		t.Fatal(err)
	}
	second, err := os.ReadFile(list)
	if err != nil {
		t.Fatal(err)
	}
	if string(second) != string(first) {
		t.Errorf("second -write changed the list:\n%s", second)
	}
	if !strings.Contains(out.String(), "markers appended to "+list+": 0\n") {
		t.Errorf("second run output:\n%s", out.String())
	}
}

// TestWithoutWriteLeavesListAlone: the report alone never touches the list,
// and repeated runs print the same report.
func TestWithoutWriteLeavesListAlone(t *testing.T) {
	orig, err := os.ReadFile(fixtureList)
	if err != nil {
		t.Fatal(err)
	}
	list := filepath.Join(t.TempDir(), "crawlers.txt")
	if err := os.WriteFile(list, orig, 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"-upstream", fixtureUpstream, "-list", list, "-browsers", fixtureBrowsers}
	var a, b bytes.Buffer
	if err := run(args, &a); err != nil {
		t.Fatal(err)
	}
	if err := run(args, &b); err != nil {
		t.Fatal(err)
	}
	if a.String() != b.String() {
		t.Errorf("two runs differ:\n%s\n---\n%s", a.String(), b.String())
	}
	if !strings.Contains(a.String(), "markers to add (run with -write to append): 1\n  zorblatt-fetch.io\n") {
		t.Errorf("output:\n%s", a.String())
	}
	if got, _ := os.ReadFile(list); string(got) != string(orig) {
		t.Errorf("list changed without -write:\n%s", got)
	}
}

func TestRunErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no upstream", nil, "-upstream is required"},
		{"missing upstream", []string{"-upstream", "testdata/none.json"}, "cannot read upstream list"},
		{"not json", []string{"-upstream", fixtureBrowsers}, "cannot decode upstream list"},
		{"missing list", []string{"-upstream", fixtureUpstream, "-list", "testdata/none.txt"}, "cannot read crawler list"},
		{"missing browsers", []string{"-upstream", fixtureUpstream, "-list", fixtureList, "-browsers", "testdata/none.txt"}, "cannot read browser corpus"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			err := run(tc.args, &out)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("run(%q) = %v, want an error with %q", tc.args, err, tc.want)
			}
		})
	}
}
