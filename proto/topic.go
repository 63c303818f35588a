package proto

import (
	"errors"
	"fmt"
	"strings"
)

// MaxTopicLength bounds a Phoenix topic in bytes. Phoenix's V2 binary frames
// carry the topic length in one byte, so no phoenix.js client can use a longer
// topic anyway; refusing it early keeps subjects short.
const MaxTopicLength = 255

// ErrBadTopic is returned (wrapped) for topics that cannot be mapped to a subject.
var ErrBadTopic = errors.New("proto: bad topic")

// ErrBadToken is returned (wrapped) when a subject token is not the escape of any topic.
var ErrBadToken = errors.New("proto: bad subject token")

// EncodeTopic maps a Phoenix topic to exactly one NATS subject token.
//
// The rule: bytes in [A-Za-z0-9], '-' and ':' stand for themselves; every other
// byte, including '_' itself, becomes '_' followed by its value in two
// upper-case hex digits. So "rooms:lobby" stays "rooms:lobby", "rooms:a.b"
// becomes "rooms:a_2Eb" and "rooms:>" becomes "rooms:_3E".
//
// Why this rule: the output never holds '.', '*', '>' or white space, so a
// topic can neither add a subject level nor become a wildcard, whatever the
// client sends; escaping '_' and accepting only upper-case hex makes the map
// injective and DecodeTopic its exact inverse; and common topics stay
// readable for people typing `nats sub`.
//
// The empty topic and topics over MaxTopicLength bytes are refused.
func EncodeTopic(topic string) (string, error) {
	if topic == "" {
		return "", fmt.Errorf("%w: empty", ErrBadTopic)
	}
	if len(topic) > MaxTopicLength {
		return "", fmt.Errorf("%w: longer than %d bytes", ErrBadTopic, MaxTopicLength)
	}
	return escape(topic, subjectSafe), nil
}

// DecodeTopic is the inverse of EncodeTopic. It accepts only canonical
// escapes, so each topic has exactly one token.
func DecodeTopic(token string) (string, error) {
	t, err := unescape(token, subjectSafe)
	if err != nil {
		return "", err
	}
	if t == "" || len(t) > MaxTopicLength {
		return "", fmt.Errorf("%w: %q decodes to an unusable topic", ErrBadToken, token)
	}
	return t, nil
}

// EncodeKey maps any string to a JetStream KV key token with the same escape
// as EncodeTopic, except that ':' is escaped too (KV keys may only hold
// [-/_=.a-zA-Z0-9]). The empty string is encoded as "_" so that it still
// makes a valid, distinct token.
func EncodeKey(s string) string {
	if s == "" {
		return "_"
	}
	return escape(s, keySafe)
}

// DecodeKey is the inverse of EncodeKey.
func DecodeKey(token string) (string, error) {
	if token == "_" {
		return "", nil
	}
	return unescape(token, keySafe)
}

func subjectSafe(c byte) bool { return keySafe(c) || c == ':' }

func keySafe(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-'
}

const hexDigits = "0123456789ABCDEF"

func escape(s string, safe func(byte) bool) string {
	n := 0
	for i := 0; i < len(s); i++ {
		if !safe(s[i]) {
			n++
		}
	}
	if n == 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 2*n)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if safe(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('_')
		b.WriteByte(hexDigits[c>>4])
		b.WriteByte(hexDigits[c&0xF])
	}
	return b.String()
}

func unescape(token string, safe func(byte) bool) (string, error) {
	if token == "" {
		return "", fmt.Errorf("%w: empty", ErrBadToken)
	}
	if !strings.Contains(token, "_") {
		for i := 0; i < len(token); i++ {
			if !safe(token[i]) {
				return "", fmt.Errorf("%w: byte %q at %d", ErrBadToken, token[i], i)
			}
		}
		return token, nil
	}
	out := make([]byte, 0, len(token))
	for i := 0; i < len(token); i++ {
		c := token[i]
		switch {
		case safe(c):
			out = append(out, c)
		case c == '_':
			if i+2 >= len(token) {
				return "", fmt.Errorf("%w: truncated escape at %d", ErrBadToken, i)
			}
			hi, lo := unhex(token[i+1]), unhex(token[i+2])
			if hi < 0 || lo < 0 {
				return "", fmt.Errorf("%w: bad escape at %d", ErrBadToken, i)
			}
			b := byte(hi<<4 | lo)
			if safe(b) {
				// A safe byte written as an escape would give a second token for the same topic.
				return "", fmt.Errorf("%w: needless escape at %d", ErrBadToken, i)
			}
			out = append(out, b)
			i += 2
		default:
			return "", fmt.Errorf("%w: byte %q at %d", ErrBadToken, c, i)
		}
	}
	return string(out), nil
}

// unhex accepts upper-case hex digits only: lower case would be a second
// spelling of the same byte.
func unhex(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}
