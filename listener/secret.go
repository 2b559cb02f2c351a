package listener

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
)

// loadSecret returns the configured secret, the one in SecretFile, or 32 random bytes
// (hex-encoded, so it travels in a header).
func loadSecret(c *Config) (string, error) {
	if c.Secret != "" {
		return c.Secret, nil
	}
	if c.SecretFile != "" {
		b, err := os.ReadFile(c.SecretFile)
		if err != nil {
			return "", fmt.Errorf("%w: --secret-file: %w", ErrConfig, err)
		}
		s := strings.TrimSpace(string(b))
		if s == "" {
			return "", fmt.Errorf("%w: --secret-file %s is empty", ErrConfig, c.SecretFile)
		}
		return s, nil
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("make a secret: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// validSecret reports whether a secret can travel in an HTTP header unchanged.
func validSecret(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return s != ""
}
