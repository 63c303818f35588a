// Package config maps the auth.* configuration keys to a token signer, for
// the authsvc binary and the one-process default alike.
package config

import (
	"errors"
	"fmt"
	"time"

	"github.com/spf13/viper"

	"github.com/phxnats/phxnats/authsvc/phxtoken"
	"github.com/phxnats/phxnats/svckit"
)

// MinSecretLength is the shortest secret_key_base accepted (Phoenix's
// generator makes 64 bytes).
const MinSecretLength = 32

// ErrNoSecret means no auth.secret_key_base was configured.
var ErrNoSecret = errors.New("auth.secret_key_base is not set: set it (flag, CHAT_AUTH_SECRET_KEY_BASE or the config file); Phoenix's `mix phx.gen.secret` makes one")

// Settings are the auth.* keys.
func Settings() []svckit.Setting {
	return []svckit.Setting{
		{Key: "auth.secret_key_base", Default: []string{}, Help: "token secrets, comma-separated: the first signs, all verify"},
		{Key: "auth.salt", Default: "user socket", Help: "Phoenix.Token salt"},
		{Key: "auth.max_age", Default: 1209600 * time.Second, Help: "token lifetime"},
	}
}

// Secrets reads auth.secret_key_base; ErrNoSecret when there is none.
func Secrets(v *viper.Viper) ([]string, error) {
	secrets := svckit.List(v, "auth.secret_key_base")
	if len(secrets) == 0 {
		return nil, ErrNoSecret
	}
	for i, s := range secrets {
		if len(s) < MinSecretLength {
			return nil, fmt.Errorf("auth.secret_key_base: secret %d is %d bytes, at least %d are needed", i+1, len(s), MinSecretLength)
		}
	}
	return secrets, nil
}

// Signer builds the token signer from the auth.* keys and the given secrets.
func Signer(v *viper.Viper, secrets []string) (*phxtoken.Signer, error) {
	age := v.GetDuration("auth.max_age")
	if age <= 0 {
		return nil, fmt.Errorf("auth.max_age must be positive, got %v", age)
	}
	return phxtoken.New(phxtoken.Options{SecretKeyBases: secrets, Salt: v.GetString("auth.salt"), MaxAge: age})
}
