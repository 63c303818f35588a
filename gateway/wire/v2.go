package wire

import (
	"fmt"
	"slices"
)

// V2 binary frame kinds (v2_json_serializer.ex @push/@reply/@broadcast).
const (
	kindPush      = 0
	kindReply     = 1
	kindBroadcast = 2
)

type v2Serializer struct{}

func (v2Serializer) Vsn() string { return "2.0.0" }

// Decode parses [join_ref, ref, topic, event, payload, ...] text frames and
// kind-0 binary pushes. Like Phoenix's `[jr, ref, topic, event, payload | _]`
// match, trailing elements are accepted and ignored (but must be valid JSON).
func (v2Serializer) Decode(data []byte, binary bool) (Message, error) {
	if binary {
		return decodeV2Binary(data)
	}
	var m Message
	i := skipSpace(data, 0)
	if i >= len(data) || data[i] != '[' {
		return m, malformed("V2 text frame must be a JSON array")
	}
	var sp [nFields]span
	var err error
	i = skipSpace(data, i+1)
	if i < len(data) && data[i] == ']' {
		return m, malformed("V2 frame is an empty array, need at least 5 elements")
	}
	for k, name := range [...]string{"join_ref", "ref", "topic", "event"} {
		if sp[k], i, err = scanStringField(data, i, name, k < fTopic); err != nil {
			return m, err
		}
		if i, err = expectComma(data, i, k+1); err != nil {
			return m, err
		}
	}
	pStart := i
	if i, err = skipValue(data, i, 1); err != nil {
		return m, err
	}
	pEnd := i
	// Extra elements: Phoenix ignores them, but Jason still has to parse
	// them, so they must be valid JSON.
	for {
		i = skipSpace(data, i)
		if i >= len(data) {
			return m, malformed("unexpected end of frame")
		}
		if data[i] == ']' {
			break
		}
		if data[i] != ',' {
			return m, malformed("expected ',' or ']' at offset %d", i)
		}
		if i, err = skipValue(data, skipSpace(data, i+1), 1); err != nil {
			return m, err
		}
	}
	if i = skipSpace(data, i+1); i != len(data) {
		return m, malformed("trailing data at offset %d", i)
	}
	setStrings(data, &sp, &m)
	m.Payload = data[pStart:pEnd:pEnd]
	return m, nil
}

// expectComma consumes the ',' after element n-1 of the frame array.
func expectComma(data []byte, i, n int) (int, error) {
	i = skipSpace(data, i)
	if i < len(data) {
		switch data[i] {
		case ',':
			return skipSpace(data, i+1), nil
		case ']':
			return 0, malformed("V2 frame has %d elements, need at least 5", n)
		}
	}
	return 0, malformed("expected ',' at offset %d", i)
}

// decodeV2Binary parses <<0, jr_len, ref_len, topic_len, event_len, jr, ref,
// topic, event, payload>>. Only pushes travel client to server; the reply and
// broadcast kinds are server-only, and Phoenix's decoder has no clause for
// them.
func decodeV2Binary(data []byte) (Message, error) {
	var m Message
	if len(data) == 0 {
		return m, malformed("empty binary frame")
	}
	if data[0] != kindPush {
		return m, malformed("binary frame kind %d, only push (0) is accepted", data[0])
	}
	if len(data) < 5 {
		return m, malformed("binary push header truncated (%d bytes)", len(data))
	}
	jl, rl, tl, el := int(data[1]), int(data[2]), int(data[3]), int(data[4])
	hdrEnd := 5 + jl + rl + tl + el
	if hdrEnd > len(data) {
		return m, malformed("binary push fields need %d bytes, frame has %d", hdrEnd, len(data))
	}
	var sp [nFields]span
	off := 5
	for k, l := range [nFields]int{jl, rl, tl, el} {
		sp[k] = span{start: off, end: off + l}
		off += l
	}
	setStrings(data, &sp, &m)
	m.Payload = data[hdrEnd:len(data):len(data)]
	m.Binary = true
	return m, nil
}

func (v2Serializer) AppendReply(dst []byte, joinRef, ref, topic, status string, response []byte, binaryResponse bool) ([]byte, bool, error) {
	if binaryResponse {
		if err := checkLens("join_ref", joinRef, "ref", ref, "topic", topic, "status", status); err != nil {
			return dst, false, err
		}
		dst = slices.Grow(dst, 5+len(joinRef)+len(ref)+len(topic)+len(status)+len(response))
		dst = append(dst, kindReply, byte(len(joinRef)), byte(len(ref)), byte(len(topic)), byte(len(status)))
		dst = append(dst, joinRef...)
		dst = append(dst, ref...)
		dst = append(dst, topic...)
		dst = append(dst, status...)
		return append(dst, response...), true, nil
	}
	dst = slices.Grow(dst, 48+jsonStringSize(joinRef)+jsonStringSize(ref)+jsonStringSize(topic)+jsonStringSize(status)+len(response))
	dst = append(dst, '[')
	dst = appendNullableString(dst, joinRef)
	dst = append(dst, ',')
	dst = appendNullableString(dst, ref)
	dst = append(dst, ',')
	dst = AppendJSONString(dst, topic)
	dst = append(dst, `,"phx_reply",{"response":`...)
	dst = appendPayload(dst, response)
	dst = append(dst, `,"status":`...)
	dst = AppendJSONString(dst, status)
	return append(dst, '}', ']'), false, nil
}

func (v2Serializer) AppendPush(dst []byte, joinRef, topic, event string, payload []byte, binaryPayload bool) ([]byte, bool, error) {
	if binaryPayload {
		// Server pushes carry no ref, so the header is one byte shorter
		// than the client push (phoenix.js decodePush relies on this).
		if err := checkLens("join_ref", joinRef, "topic", topic, "event", event, "", ""); err != nil {
			return dst, false, err
		}
		dst = slices.Grow(dst, 4+len(joinRef)+len(topic)+len(event)+len(payload))
		dst = append(dst, kindPush, byte(len(joinRef)), byte(len(topic)), byte(len(event)))
		dst = append(dst, joinRef...)
		dst = append(dst, topic...)
		dst = append(dst, event...)
		return append(dst, payload...), true, nil
	}
	dst = slices.Grow(dst, 16+jsonStringSize(joinRef)+jsonStringSize(topic)+jsonStringSize(event)+len(payload))
	dst = append(dst, '[')
	dst = appendNullableString(dst, joinRef)
	dst = append(dst, ",null,"...)
	return appendV2Tail(dst, topic, event, payload), false, nil
}

func (v2Serializer) AppendBroadcast(dst []byte, topic, event string, payload []byte, binaryPayload bool) ([]byte, bool, error) {
	if binaryPayload {
		if err := checkLens("topic", topic, "event", event, "", "", "", ""); err != nil {
			return dst, false, err
		}
		dst = slices.Grow(dst, 3+len(topic)+len(event)+len(payload))
		dst = append(dst, kindBroadcast, byte(len(topic)), byte(len(event)))
		dst = append(dst, topic...)
		dst = append(dst, event...)
		return append(dst, payload...), true, nil
	}
	dst = slices.Grow(dst, 16+jsonStringSize(topic)+jsonStringSize(event)+len(payload))
	dst = append(dst, "[null,null,"...)
	return appendV2Tail(dst, topic, event, payload), false, nil
}

func (v2Serializer) AppendBroadcastRef(dst []byte, ref, topic, event string, payload []byte) []byte {
	dst = slices.Grow(dst, 16+jsonStringSize(ref)+jsonStringSize(topic)+jsonStringSize(event)+len(payload))
	dst = append(dst, "[null,"...)
	dst = AppendJSONString(dst, ref)
	dst = append(dst, ',')
	return appendV2Tail(dst, topic, event, payload)
}

func (v2Serializer) AppendClose(dst []byte, joinRef, topic string) ([]byte, bool, error) {
	return appendV2Control(dst, joinRef, topic, "phx_close"), false, nil
}

func (v2Serializer) AppendError(dst []byte, joinRef, topic string) ([]byte, bool, error) {
	return appendV2Control(dst, joinRef, topic, "phx_error"), false, nil
}

// appendV2Control writes [jr, jr, topic, event, {}], the shape of Phoenix's
// encode_close and of phx_error as observed on the wire.
func appendV2Control(dst []byte, joinRef, topic, event string) []byte {
	dst = slices.Grow(dst, 16+2*jsonStringSize(joinRef)+jsonStringSize(topic)+len(event))
	dst = append(dst, '[')
	dst = appendNullableString(dst, joinRef)
	dst = append(dst, ',')
	dst = appendNullableString(dst, joinRef)
	dst = append(dst, ',')
	return appendV2Tail(dst, topic, event, nil)
}

// appendV2Tail writes `"topic","event",payload]`.
func appendV2Tail(dst []byte, topic, event string, payload []byte) []byte {
	dst = AppendJSONString(dst, topic)
	dst = append(dst, ',')
	dst = AppendJSONString(dst, event)
	dst = append(dst, ',')
	dst = appendPayload(dst, payload)
	return append(dst, ']')
}

// checkLens enforces the one-byte length prefixes of binary frames, naming
// the offending field as Phoenix's byte_size!/3 does. Unused pairs are "".
func checkLens(n1, v1, n2, v2, n3, v3, n4, v4 string) error {
	for _, f := range [...]struct{ n, v string }{{n1, v1}, {n2, v2}, {n3, v3}, {n4, v4}} {
		if len(f.v) > 255 {
			return fmt.Errorf("%w: %s is %d bytes", ErrFieldTooLong, f.n, len(f.v))
		}
	}
	return nil
}
