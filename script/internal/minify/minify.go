// Package minify turns the readable tracking script into its minified variants and templates
// with esbuild.
//
// It is used only at build time (by script/internal/gen through `go generate`) and by the
// reproducibility test, so esbuild never ends up in the collector binary.
package minify

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/evanw/esbuild/pkg/api"

	"github.com/kyomi/collector/script/internal/segments"
)

// Extension is one optional feature of the script, named as in Plausible's file names (engagement,
// which Plausible's scripts always include, is ours: it does not fit the default script's budget).
type Extension struct {
	Name string
	// Constant is the compile-time constant of script/src/script.js that switches the feature
	// on; esbuild removes the code behind a false constant. Empty for a segment extension: its
	// code sits between `//#if name` (or `//#if !name`) and `//#end` lines of the source and
	// the server keeps or cuts it per request (see Template).
	Constant string
}

// Extensions lists every extension, constant extensions first, in the order they appear in a
// canonical file name. "script.hash.outbound-links.js" is the default script plus hash routing
// and outbound links.
var Extensions = []Extension{
	{Name: "hash", Constant: "HASH"},
	{Name: "outbound-links", Constant: "OUTBOUND"},
	{Name: "file-downloads", Constant: "FILES"},
	{Name: "compat"},
	{Name: "engagement"},
	{Name: "exclusions"},
	{Name: "local"},
	{Name: "manual"},
	{Name: "pageview-props"},
	{Name: "revenue"},
	{Name: "tagged-events"},
}

// Variants returns the canonical base names of the prebuilt variants ("script", "script.hash",
// ...): one per subset of the constant extensions, default first. Each is also the name of a
// template. The result is a new slice on each call.
func Variants() []string {
	var constants []Extension
	for _, ext := range Extensions {
		if ext.Constant != "" {
			constants = append(constants, ext)
		}
	}
	names := make([]string, 0, 1<<len(constants))
	for mask := 0; mask < 1<<len(constants); mask++ {
		name := "script"
		for i, ext := range constants {
			if mask&(1<<i) != 0 {
				name += "." + ext.Name
			}
		}
		names = append(names, name)
	}
	sort.SliceStable(names, func(i, j int) bool {
		return strings.Count(names[i], ".") < strings.Count(names[j], ".")
	})
	return names
}

// Build minifies src for the variant with the base name variant (any extensions, any order):
// constants are defined and segments kept or dropped before esbuild runs. The output is a pure
// function of src, variant and the pinned esbuild version: no timestamps, no paths.
func Build(src []byte, variant string) ([]byte, error) {
	on, define, err := parse(variant)
	if err != nil {
		return nil, err
	}
	code, err := preprocess(src, func(name string) bool { return on[name] }, false)
	if err != nil {
		return nil, err
	}
	return transform(code, variant, define, api.LegalCommentsNone)
}

// Template minifies src for the variant with the base name variant, which may name constant
// extensions only, keeping the code of every segment extension between markers that
// script/internal/segments cuts. The output is a pure function of src, variant and the pinned
// esbuild version.
func Template(src []byte, variant string) ([]byte, error) {
	on, define, err := parse(variant)
	if err != nil {
		return nil, err
	}
	for _, ext := range Extensions {
		if on[ext.Name] && ext.Constant == "" {
			return nil, fmt.Errorf("cannot build a template for %q: %s is a segment extension", variant, ext.Name)
		}
	}
	code, err := preprocess(src, nil, true)
	if err != nil {
		return nil, err
	}
	tmpl, err := transform(code, variant, define, api.LegalCommentsInline)
	if err != nil {
		return nil, err
	}
	// The minifier must have kept the markers balanced and no other legal comment.
	names, err := segments.Names(tmpl)
	if err != nil {
		return nil, fmt.Errorf("cannot use template %s: %w", variant, err)
	}
	for _, name := range names {
		if e := find(name); e == nil || e.Constant != "" {
			return nil, fmt.Errorf("cannot use template %s: marker names %q", variant, name)
		}
	}
	return tmpl, nil
}

func find(name string) *Extension {
	for i := range Extensions {
		if Extensions[i].Name == name {
			return &Extensions[i]
		}
	}
	return nil
}

// parse splits a base name into its set of extensions and the esbuild defines of the constant
// extensions.
func parse(variant string) (map[string]bool, map[string]string, error) {
	parts := strings.Split(variant, ".")
	if parts[0] != "script" {
		return nil, nil, fmt.Errorf("cannot build unknown variant %q", variant)
	}
	on := map[string]bool{}
	for _, part := range parts[1:] {
		if find(part) == nil || on[part] {
			return nil, nil, fmt.Errorf("cannot build unknown variant %q", variant)
		}
		on[part] = true
	}
	define := map[string]string{}
	for _, ext := range Extensions {
		if ext.Constant != "" {
			define[ext.Constant] = fmt.Sprint(on[ext.Name])
		}
	}
	return on, define, nil
}

// preprocess resolves the `//#if name`, `//#if !name` and `//#end` lines of src. With markers,
// every segment is kept and each directive becomes a legal comment that esbuild keeps in place
// (/*!+name*/, /*!-name*/, /*!end*/); without, a segment is kept when on says so.
func preprocess(src []byte, on func(string) bool, markers bool) ([]byte, error) {
	var out bytes.Buffer
	keep := []bool{true}
	sc := bufio.NewScanner(bytes.NewReader(src))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		directive := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(directive, "//#if "):
			name, negated := strings.CutPrefix(strings.TrimSpace(strings.TrimPrefix(directive, "//#if ")), "!")
			if e := find(name); e == nil || e.Constant != "" {
				return nil, fmt.Errorf("line %d: %q is not a segment extension", n, name)
			}
			if markers {
				sign := "+"
				if negated {
					sign = "-"
				}
				out.WriteString("/*!" + sign + name + "*/\n")
				continue
			}
			keep = append(keep, keep[len(keep)-1] && on(name) != negated)
			continue
		case directive == "//#end":
			if markers {
				out.WriteString("/*!end*/\n")
				continue
			}
			if len(keep) == 1 {
				return nil, fmt.Errorf("line %d: //#end without //#if", n)
			}
			keep = keep[:len(keep)-1]
			continue
		case strings.HasPrefix(directive, "//#"):
			return nil, fmt.Errorf("line %d: unknown directive %q", n, directive)
		}
		if keep[len(keep)-1] {
			out.WriteString(line)
			out.WriteByte('\n')
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(keep) != 1 {
		return nil, fmt.Errorf("%d //#if without //#end", len(keep)-1)
	}
	return out.Bytes(), nil
}

func transform(code []byte, variant string, define map[string]string, legal api.LegalComments) ([]byte, error) {
	result := api.Transform(string(code), api.TransformOptions{
		Loader:            api.LoaderJS,
		Target:            api.ES2017,
		Charset:           api.CharsetUTF8,
		LegalComments:     legal,
		MinifyWhitespace:  true,
		MinifyIdentifiers: true,
		MinifySyntax:      true,
		Define:            define,
		Sourcefile:        "script.js",
	})
	if len(result.Errors) > 0 {
		msgs := make([]error, 0, len(result.Errors))
		for _, m := range result.Errors {
			msgs = append(msgs, errors.New(m.Text))
		}
		return nil, fmt.Errorf("cannot minify variant %s: %w", variant, errors.Join(msgs...))
	}
	return result.Code, nil
}

// Generate builds every prebuilt variant and every template from the source file at srcPath and
// writes them to distDir as <variant>.min.js and <variant>.tmpl.js, removing stale files of
// either kind that the build no longer produces.
func Generate(srcPath, distDir string) error {
	src, err := os.ReadFile(srcPath)
	if err != nil {
		return fmt.Errorf("cannot read script source: %w", err)
	}
	if err := os.MkdirAll(distDir, 0o755); err != nil {
		return fmt.Errorf("cannot create %s: %w", distDir, err)
	}
	var want []string
	for _, variant := range Variants() {
		for _, kind := range []struct {
			suffix string
			build  func([]byte, string) ([]byte, error)
		}{{".min.js", Build}, {".tmpl.js", Template}} {
			code, err := kind.build(src, variant)
			if err != nil {
				return err
			}
			file := filepath.Join(distDir, variant+kind.suffix)
			want = append(want, file)
			if err := os.WriteFile(file, code, 0o644); err != nil {
				return fmt.Errorf("cannot write %s: %w", file, err)
			}
		}
	}
	old, err := filepath.Glob(filepath.Join(distDir, "*.js"))
	if err != nil {
		return fmt.Errorf("cannot list %s: %w", distDir, err)
	}
	for _, file := range old {
		if !slices.Contains(want, file) {
			if err := os.Remove(file); err != nil {
				return fmt.Errorf("cannot remove stale %s: %w", file, err)
			}
		}
	}
	return nil
}
