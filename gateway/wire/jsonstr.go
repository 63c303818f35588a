package wire

import (
	"unicode/utf8"
)

// strSpecial marks the bytes a JSON string cannot hold literally ('"', '\\',
// control characters) plus every non-ASCII byte, which needs a UTF-8 check.
// Both the appender and the scanner spin over the other bytes with a single
// table lookup.
var strSpecial = func() (t [256]bool) {
	for i := range t {
		t[i] = i < 0x20 || i == '"' || i == '\\' || i >= utf8.RuneSelf
	}
	return t
}()

const hexUpper = "0123456789ABCDEF"

// AppendJSONString appends s as a quoted JSON string. It escapes exactly what
// Jason (Phoenix's encoder) escapes: '"', '\\' and control characters, using
// the short forms \b \t \n \f \r and \u00XX (upper-case hex, as Jason writes
// it) for the rest. Unlike encoding/json it leaves <, >, & and U+2028/U+2029
// alone, so output matches Phoenix byte for byte. Invalid UTF-8 bytes become
// \ufffd (as encoding/json does) because a WebSocket text frame must be valid
// UTF-8.
func AppendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if !strSpecial[c] {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\t':
				dst = append(dst, '\\', 't')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\r':
				dst = append(dst, '\\', 'r')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexUpper[c>>4], hexUpper[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// appendNullableString writes null for "", which is how the gateway
// represents a nil join_ref or ref.
func appendNullableString(dst []byte, s string) []byte {
	if s == "" {
		return append(dst, "null"...)
	}
	return AppendJSONString(dst, s)
}

// appendPayload writes trusted JSON; an empty payload becomes {} so the frame
// stays valid JSON.
func appendPayload(dst []byte, p []byte) []byte {
	if len(p) == 0 {
		return append(dst, '{', '}')
	}
	return append(dst, p...)
}

// jsonStringSize estimates AppendJSONString's output for sizing buffers
// without a second pass; escapes are rare in topics and events, so it assumes
// none and lets append grow in the unusual case.
func jsonStringSize(s string) int { return len(s) + 2 }
