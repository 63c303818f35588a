// Package wire implements the Phoenix channel wire format (serializer
// vsn 1.x and 2.x) byte-compatibly with Phoenix 1.7, so that unmodified
// phoenix.js clients can talk to the gateway.
//
// Decoding and encoding are on the hot path of the gateway, so the package
// uses a hand-written JSON scanner instead of encoding/json: payloads are
// validated and sliced out of the frame, never unmarshalled, and encoders
// append to a caller-owned buffer so that a broadcast can be encoded once and
// written to every subscriber.
package wire

import (
	"errors"
	"fmt"
)

// Message is one decoded client frame.
type Message struct {
	// JoinRef is "" when the client sent null or omitted it.
	JoinRef string
	// Ref is "" when the client sent null; heartbeats and pushes that
	// expect a reply carry one.
	Ref string
	// Topic is whatever the client sent (escapes decoded; arbitrary bytes
	// in a binary push); the wire format does not restrict it, so routing
	// code must validate it.
	Topic string
	// Event is the channel event, e.g. "phx_join" or "heartbeat".
	Event string
	// Payload is the raw JSON of the payload exactly as sent (any JSON value,
	// surrounding whitespace trimmed) or, when Binary is set, the raw bytes
	// of a V2 binary push. It aliases the buffer passed to Decode, so the
	// caller must copy it before reusing that buffer.
	Payload []byte
	// Binary reports that Payload came from a V2 binary push frame and is
	// therefore opaque bytes, not JSON.
	Binary bool
}

// Serializer encodes and decodes one protocol version.
//
// Every Append* method appends one complete frame to dst and returns the
// extended slice plus whether the frame must be sent with the WebSocket
// binary opcode. On error dst is returned unchanged. Payload and response
// bytes are trusted to be valid JSON (the caller validated them); an empty
// JSON payload is written as {} because an empty value would corrupt the
// frame and {} is Phoenix's default payload.
type Serializer interface {
	// Vsn is the canonical protocol version, "1.0.0" or "2.0.0".
	Vsn() string
	// Decode parses one client frame; binary is true for the WebSocket
	// binary opcode. Every error wraps ErrMalformed.
	Decode(data []byte, binary bool) (Message, error)
	// AppendReply encodes a phx_reply with {"response":response,"status":status}.
	AppendReply(dst []byte, joinRef, ref, topic, status string, response []byte, binaryResponse bool) ([]byte, bool, error)
	// AppendPush encodes a server push [join_ref, null, topic, event, payload].
	AppendPush(dst []byte, joinRef, topic, event string, payload []byte, binaryPayload bool) ([]byte, bool, error)
	// AppendBroadcast encodes a fastlane broadcast [null, null, topic, event, payload].
	AppendBroadcast(dst []byte, topic, event string, payload []byte, binaryPayload bool) ([]byte, bool, error)
	// AppendBroadcastRef encodes a JSON broadcast with a ref, [null, ref,
	// topic, event, payload]: the position of a broadcast on a channel
	// joined with history (proto.JoinHistory), which phoenix.js hands to
	// channel.on callbacks as their second argument.
	AppendBroadcastRef(dst []byte, ref, topic, event string, payload []byte) []byte
	// AppendClose encodes phx_close; Phoenix puts the join_ref in both ref slots.
	AppendClose(dst []byte, joinRef, topic string) ([]byte, bool, error)
	// AppendError encodes phx_error; Phoenix puts the join_ref in both ref slots.
	AppendError(dst []byte, joinRef, topic string) ([]byte, bool, error)
}

var (
	// ErrMalformed is wrapped by every Decode error. Phoenix answers such
	// frames by closing the socket with code 1011.
	ErrMalformed = errors.New("wire: malformed frame")
	// ErrBinaryUnsupported is returned when a binary payload is encoded with
	// the V1 serializer, whose JSON-only frames cannot carry raw bytes.
	ErrBinaryUnsupported = errors.New("wire: binary payloads require serializer vsn 2.x")
	// ErrFieldTooLong is returned when a field of a V2 binary frame exceeds
	// the 255 bytes its one-byte length prefix can express.
	ErrFieldTooLong = errors.New("wire: field too long for V2 binary frame")
	// ErrUnsupportedVsn is returned by ForVsn for versions Phoenix would
	// refuse (it answers the upgrade with HTTP 403).
	ErrUnsupportedVsn = errors.New("wire: unsupported serializer vsn")
)

var (
	// V1 is the vsn 1.x serializer: JSON object frames, no join_ref on output.
	V1 Serializer = v1Serializer{}
	// V2 is the vsn 2.x serializer: JSON array frames plus binary frames.
	V2 Serializer = v2Serializer{}
)

// ForVsn picks the serializer for the vsn query parameter the way Phoenix's
// negotiate_serializer does: the version must parse as an Elixir Version and
// match "~> 1.0.0" (V1) or "~> 2.0.0" (V2). The empty string means the
// parameter was absent, for which Phoenix defaults to "1.0.0".
func ForVsn(vsn string) (Serializer, error) {
	if vsn == "" {
		return V1, nil
	}
	switch matchTilde(vsn) {
	case 1:
		return V1, nil
	case 2:
		return V2, nil
	}
	return nil, fmt.Errorf("%w %q", ErrUnsupportedVsn, vsn)
}

// matchTilde returns the major version (1 or 2) whose "~> M.0.0"
// requirement vsn satisfies under Elixir's Version.match?/2 with its default
// allow_pre: true, or 0. That requirement means ">= M.0.0 and < M.1.0-0",
// so M.0.0 itself must not be a pre-release (it would sort below M.0.0),
// while any M.0.P with P > 0 matches even as a pre-release.
func matchTilde(vsn string) int {
	major, minor, patch, pre, ok := parseElixirVersion(vsn)
	if !ok || minor != "0" {
		return 0
	}
	if patch == "0" && pre {
		return 0
	}
	switch major {
	case "1":
		return 1
	case "2":
		return 2
	}
	return 0
}

// parseElixirVersion mirrors Version.Parser.parse_version/1 (Elixir 1.14):
// MAJOR.MINOR.PATCH[-pre][+build] with no leading zeros in numeric parts.
// Numbers are returned as their digit strings because leading zeros are
// rejected, which makes the digit string canonical and avoids overflow on
// the arbitrary-precision integers Elixir accepts.
func parseElixirVersion(s string) (major, minor, patch string, pre, ok bool) {
	var build string
	hasBuild := false
	for i := 0; i < len(s); i++ {
		if s[i] == '+' {
			s, build, hasBuild = s[:i], s[i+1:], true
			break
		}
	}
	var preStr string
	for i := 0; i < len(s); i++ {
		if s[i] == '-' {
			s, preStr, pre = s[:i], s[i+1:], true
			break
		}
	}
	var parts [3]string
	n := 0
	start := 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == '.' {
			if n == 3 {
				return "", "", "", false, false
			}
			parts[n] = s[start:i]
			n++
			start = i + 1
		}
	}
	if n != 3 {
		return "", "", "", false, false
	}
	for _, p := range parts {
		if !isVersionNumber(p) {
			return "", "", "", false, false
		}
	}
	if pre && !validDotIdentifiers(preStr, true) {
		return "", "", "", false, false
	}
	if hasBuild && !validDotIdentifiers(build, false) {
		return "", "", "", false, false
	}
	return parts[0], parts[1], parts[2], pre, true
}

// isVersionNumber reports a non-empty run of digits without a leading zero.
func isVersionNumber(p string) bool {
	if p == "" || (len(p) > 1 && p[0] == '0') {
		return false
	}
	for i := 0; i < len(p); i++ {
		if p[i] < '0' || p[i] > '9' {
			return false
		}
	}
	return true
}

// validDotIdentifiers checks dot-separated non-empty [0-9A-Za-z-]
// identifiers; in pre-release parts purely numeric identifiers must also
// avoid leading zeros.
func validDotIdentifiers(s string, numericNoLeadingZero bool) bool {
	start := 0
	for i := 0; i <= len(s); i++ {
		if i < len(s) && s[i] != '.' {
			c := s[i]
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '-') {
				return false
			}
			continue
		}
		id := s[start:i]
		if id == "" {
			return false
		}
		if numericNoLeadingZero && len(id) > 1 && id[0] == '0' && allDigits(id) {
			return false
		}
		start = i + 1
	}
	return true
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// malformed builds a Decode error; it is only reached for bad input, so the
// formatting cost does not matter.
func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
}
