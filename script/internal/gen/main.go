// Command gen writes the prebuilt tracking script variants (*.min.js) and their templates
// (*.tmpl.js) to script/dist. It runs from the script directory through `go generate ./script`;
// the output is committed and embedded.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/kyomi/collector/script/internal/minify"
)

func main() {
	src := flag.String("src", "src/script.js", "readable script source")
	dist := flag.String("dist", "dist", "directory that receives <variant>.min.js and <variant>.tmpl.js")
	flag.Parse()
	if err := minify.Generate(*src, *dist); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
