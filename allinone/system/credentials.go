package system

import (
	"errors"
	"fmt"
	"os"

	"github.com/nats-io/nkeys"
)

// NATSKeyFile is the file in the data folder that holds the embedded
// nats-server's one user: an nkey seed, generated on the first start. Every
// part of the system connects with it, and so do tools: chatctl finds it in
// the default data folder, the nats CLI takes it with --nkey, Go with
// nats.NkeyOptionFromSeed. Nobody connects without it.
const NATSKeyFile = "nats.nk"

// loadOrCreateNKey returns the public key of the user seed in path,
// generating the seed (readable by its owner only) when the file does not
// exist.
func loadOrCreateNKey(path string) (string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		kp, err := nkeys.CreateUser()
		if err != nil {
			return "", err
		}
		seed, err := kp.Seed()
		if err != nil {
			return "", err
		}
		if err := os.WriteFile(path, append(seed, '\n'), 0o600); err != nil {
			return "", fmt.Errorf("write generated NATS key: %w", err)
		}
		return kp.PublicKey()
	}
	if err != nil {
		return "", err
	}
	kp, err := nkeys.ParseDecoratedNKey(b)
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		return "", err
	}
	if !nkeys.IsValidPublicUserKey(pub) {
		return "", fmt.Errorf("%s: not an nkey user seed", path)
	}
	return pub, nil
}
