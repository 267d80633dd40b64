package query

import (
	"fmt"
	"io"
	"os"
	"strings"
)

// maxTokenFileBytes bounds a token file: a Connect token is well under 2 KiB, and the verifier
// refuses anything over 8 KiB anyway.
const maxTokenFileBytes = 8 << 10

// ReadTokenFile reads a file that holds one JWT (the collector's -connect-token), surrounding
// white space ignored. Its errors never quote the file's content. An Agent that should pick up a
// rotated token calls it from AgentConfig.Token.
func ReadTokenFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("cannot read the token file: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxTokenFileBytes+1))
	if err != nil {
		return "", fmt.Errorf("cannot read the token file %s: %w", path, err)
	}
	token := strings.TrimSpace(string(data))
	switch {
	case len(data) > maxTokenFileBytes:
		return "", fmt.Errorf("%s is larger than %d bytes, want one token", path, maxTokenFileBytes)
	case token == "":
		return "", fmt.Errorf("%s is empty, want one token", path)
	case strings.ContainsAny(token, " \t\r\n"):
		return "", fmt.Errorf("%s holds more than one line or word, want one token", path)
	}
	return token, nil
}
