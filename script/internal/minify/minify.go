// Package minify turns the readable tracking script into its minified variants with esbuild.
//
// It is used only at build time (by script/internal/gen through `go generate`) and by the
// reproducibility test, so esbuild never ends up in the collector binary.
package minify

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/evanw/esbuild/pkg/api"
)

// Extensions lists the optional features in the order they appear in a canonical file name,
// mapped to the compile-time constant of script/src/script.js that each one switches on.
// "script.hash.outbound-links.js" is the default script plus hash routing and outbound links.
var Extensions = []struct {
	Name     string
	Constant string
}{
	{Name: "hash", Constant: "HASH"},
	{Name: "outbound-links", Constant: "OUTBOUND"},
	{Name: "file-downloads", Constant: "FILES"},
}

// Variants returns the canonical base names of every variant ("script", "script.hash", ...),
// one per subset of Extensions, default first. The result is a new slice on each call.
func Variants() []string {
	names := make([]string, 0, 1<<len(Extensions))
	for mask := 0; mask < 1<<len(Extensions); mask++ {
		name := "script"
		for i, ext := range Extensions {
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

// Build minifies src for the variant with the canonical base name variant. The output is a
// pure function of src, variant and the pinned esbuild version: no timestamps, no paths.
func Build(src []byte, variant string) ([]byte, error) {
	on := map[string]bool{}
	for _, part := range strings.Split(variant, ".")[1:] {
		on[part] = true
	}
	define := make(map[string]string, len(Extensions))
	for _, ext := range Extensions {
		define[ext.Constant] = fmt.Sprint(on[ext.Name])
		delete(on, ext.Name)
	}
	if !strings.HasPrefix(variant, "script") || len(on) != 0 {
		return nil, fmt.Errorf("cannot build unknown variant %q", variant)
	}
	result := api.Transform(string(src), api.TransformOptions{
		Loader:            api.LoaderJS,
		Target:            api.ES2017,
		Charset:           api.CharsetUTF8,
		LegalComments:     api.LegalCommentsNone,
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

// Generate builds every variant from the source file at srcPath and writes them to distDir
// as <variant>.min.js, removing stale *.min.js files that no variant produces any more.
func Generate(srcPath, distDir string) error {
	src, err := os.ReadFile(srcPath)
	if err != nil {
		return fmt.Errorf("cannot read script source: %w", err)
	}
	if err := os.MkdirAll(distDir, 0o755); err != nil {
		return fmt.Errorf("cannot create %s: %w", distDir, err)
	}
	want := map[string]bool{}
	for _, variant := range Variants() {
		code, err := Build(src, variant)
		if err != nil {
			return err
		}
		file := filepath.Join(distDir, variant+".min.js")
		want[file] = true
		if err := os.WriteFile(file, code, 0o644); err != nil {
			return fmt.Errorf("cannot write %s: %w", file, err)
		}
	}
	old, err := filepath.Glob(filepath.Join(distDir, "*.min.js"))
	if err != nil {
		return fmt.Errorf("cannot list %s: %w", distDir, err)
	}
	for _, file := range old {
		if !want[file] {
			if err := os.Remove(file); err != nil {
				return fmt.Errorf("cannot remove stale %s: %w", file, err)
			}
		}
	}
	return nil
}
