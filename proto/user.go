package proto

import (
	"errors"
	"fmt"
	"unicode"
	"unicode/utf8"
)

// MaxUserIDLength bounds a user id in bytes. Every per-user subject
// (DisconnectSubject, KickSubject, IgnoresSubject) escapes the id with
// EncodeTopic, which refuses more than MaxTopicLength bytes: an id past
// this length could be signed but never kicked or disconnected.
const MaxUserIDLength = MaxTopicLength

// ErrBadUserID is returned (wrapped) by ValidUserID.
var ErrBadUserID = errors.New("proto: bad user id")

// ValidUserID is the one rule for user ids, applied wherever an id enters
// the system: authsvc when it signs and when it verifies (a Phoenix app's
// token included), roomsvc for memberships and ignore lists, chatctl before
// it sends anything. An id is 1 to MaxUserIDLength bytes of valid UTF-8
// without control characters (Unicode category Cc: C0, DEL, C1), so that it
// can be written in a log line, a KV key and a subject, and shown to people.
func ValidUserID(id string) error {
	switch {
	case id == "":
		return fmt.Errorf("%w: empty", ErrBadUserID)
	case len(id) > MaxUserIDLength:
		return fmt.Errorf("%w: %d bytes, at most %d", ErrBadUserID, len(id), MaxUserIDLength)
	case !utf8.ValidString(id):
		return fmt.Errorf("%w: not valid UTF-8", ErrBadUserID)
	}
	for i, r := range id {
		if unicode.IsControl(r) {
			return fmt.Errorf("%w: control character %U at byte %d", ErrBadUserID, r, i)
		}
	}
	return nil
}
