package listener

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
)

// MaxSecretBytes bounds the secret. It travels in every app's environment (OLIO_SECRET),
// where Linux refuses a single string over 128 KiB with "argument list too long", and in
// the X-Olio-Secret header of every direct call, which --max-header-bytes bounds.
const MaxSecretBytes = 1024

// loadSecret returns the configured secret, the one in SecretFile, or 32 random bytes
// (hex-encoded, so it travels in a header), checked by checkSecret.
func loadSecret(c *Config) (string, error) {
	if c.Secret != "" {
		return c.Secret, checkSecret(c.Secret, "--secret (or $OLIO_SECRET)"+c.from("secret"))
	}
	if c.SecretFile != "" {
		from := "--secret-file " + c.SecretFile + c.from("secret-file")
		b, err := os.ReadFile(c.SecretFile)
		if err != nil {
			return "", fmt.Errorf("%w: %s: %w", ErrConfig, from, unwrapPath(err))
		}
		s := strings.TrimSpace(string(b))
		if s == "" {
			return "", fmt.Errorf("%w: %s is empty", ErrConfig, from)
		}
		return s, checkSecret(s, from)
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("make a secret: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// checkSecret reports a secret that cannot travel in an HTTP header and an environment
// variable unchanged; from says where it came from, for the message.
func checkSecret(s, from string) error {
	if len(s) > MaxSecretBytes {
		return fmt.Errorf("%w: the secret from %s is %d bytes; at most %d, since it travels in every app's environment (OLIO_SECRET) and in the X-Olio-Secret header; 32 random bytes in hex are plenty",
			ErrConfig, from, len(s), MaxSecretBytes)
	}
	if !validSecret(s) {
		return fmt.Errorf("%w: the secret from %s must be printable ASCII without spaces (it travels in a header)", ErrConfig, from)
	}
	return nil
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
