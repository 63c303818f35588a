package wire

import "slices"

type v1Serializer struct{}

func (v1Serializer) Vsn() string { return "1.0.0" }

// V1 object keys, as bits of the "seen" mask.
const (
	keyTopic = 1 << iota
	keyEvent
	keyPayload
	keyRef
	keyJoinRef
)

// Decode parses {"topic","event","payload","ref"[,"join_ref"]} objects,
// mirroring Phoenix's Message.from_map!: the first four keys are required
// (ref may be null), join_ref is optional and other keys are ignored.
// Duplicate keys resolve to the first occurrence, as Jason's map building
// (:maps.from_list over a reversed pair list) does.
//
// Phoenix's V1 serializer would also parse a binary-opcode frame as JSON;
// the gateway rejects it because no V1 client sends binary frames.
func (v1Serializer) Decode(data []byte, binary bool) (Message, error) {
	var m Message
	if binary {
		return m, malformed("binary frames are not part of serializer vsn 1.x")
	}
	i := skipSpace(data, 0)
	if i >= len(data) || data[i] != '{' {
		return m, malformed("V1 frame must be a JSON object")
	}
	var sp [nFields]span
	sp[fJoinRef].null = true
	var pStart, pEnd int
	seen := 0
	i = skipSpace(data, i+1)
	if i < len(data) && data[i] == '}' {
		i++
	} else {
		for {
			if i >= len(data) || data[i] != '"' {
				return m, malformed("expected object key at offset %d", i)
			}
			kStart := i
			kEnd, kEsc, err := scanString(data, i)
			if err != nil {
				return m, err
			}
			raw := data[kStart+1 : kEnd-1]
			var key int
			if kEsc {
				key = v1Key(unquote(raw))
			} else {
				key = v1Key(string(raw))
			}
			i = skipSpace(data, kEnd)
			if i >= len(data) || data[i] != ':' {
				return m, malformed("expected ':' at offset %d", i)
			}
			i = skipSpace(data, i+1)
			if seen&key != 0 {
				key = 0 // duplicate: first occurrence wins
			}
			seen |= key
			switch key {
			case keyTopic:
				sp[fTopic], i, err = scanStringField(data, i, "topic", false)
			case keyEvent:
				sp[fEvent], i, err = scanStringField(data, i, "event", false)
			case keyRef:
				sp[fRef], i, err = scanStringField(data, i, "ref", true)
			case keyJoinRef:
				sp[fJoinRef], i, err = scanStringField(data, i, "join_ref", true)
			case keyPayload:
				pStart = i
				i, err = skipValue(data, i, 1)
				pEnd = i
			default:
				i, err = skipValue(data, i, 1)
			}
			if err != nil {
				return m, err
			}
			i = skipSpace(data, i)
			if i >= len(data) {
				return m, malformed("unexpected end of frame")
			}
			if data[i] == '}' {
				i++
				break
			}
			if data[i] != ',' {
				return m, malformed("expected ',' or '}' at offset %d", i)
			}
			i = skipSpace(data, i+1)
		}
	}
	if i = skipSpace(data, i); i != len(data) {
		return m, malformed("trailing data at offset %d", i)
	}
	for _, k := range [...]struct {
		bit  int
		name string
	}{{keyTopic, "topic"}, {keyEvent, "event"}, {keyPayload, "payload"}, {keyRef, "ref"}} {
		if seen&k.bit == 0 {
			return m, malformed("missing key %q", k.name)
		}
	}
	setStrings(data, &sp, &m)
	m.Payload = data[pStart:pEnd:pEnd]
	return m, nil
}

// v1Key maps an object key to its bit; the switch on a []byte-to-string
// conversion does not allocate.
func v1Key(k string) int {
	switch k {
	case "topic":
		return keyTopic
	case "event":
		return keyEvent
	case "payload":
		return keyPayload
	case "ref":
		return keyRef
	case "join_ref":
		return keyJoinRef
	}
	return 0
}

// V1 output never carries join_ref (Phoenix does Map.take([:topic, :event,
// :payload, :ref])) and Jason writes the keys of small maps sorted, hence
// event, payload, ref, topic.

// AppendReply ignores joinRef for the same reason as AppendPush.
func (v1Serializer) AppendReply(dst []byte, joinRef, ref, topic, status string, response []byte, binaryResponse bool) ([]byte, bool, error) {
	if binaryResponse {
		return dst, false, ErrBinaryUnsupported
	}
	dst = slices.Grow(dst, 80+jsonStringSize(ref)+jsonStringSize(topic)+jsonStringSize(status)+len(response))
	dst = append(dst, `{"event":"phx_reply","payload":{"response":`...)
	dst = appendPayload(dst, response)
	dst = append(dst, `,"status":`...)
	dst = AppendJSONString(dst, status)
	dst = append(dst, `},"ref":`...)
	return appendV1Tail(dst, ref, topic), false, nil
}

// AppendPush ignores joinRef: V1 frames have no slot for it, so a push and
// a broadcast encode identically.
func (v1Serializer) AppendPush(dst []byte, joinRef, topic, event string, payload []byte, binaryPayload bool) ([]byte, bool, error) {
	if binaryPayload {
		return dst, false, ErrBinaryUnsupported
	}
	return appendV1Message(dst, topic, event, "", payload), false, nil
}

func (v1Serializer) AppendBroadcast(dst []byte, topic, event string, payload []byte, binaryPayload bool) ([]byte, bool, error) {
	if binaryPayload {
		return dst, false, ErrBinaryUnsupported
	}
	return appendV1Message(dst, topic, event, "", payload), false, nil
}

func (v1Serializer) AppendBroadcastRef(dst []byte, ref, topic, event string, payload []byte) []byte {
	return appendV1Message(dst, topic, event, ref, payload)
}

func (v1Serializer) AppendClose(dst []byte, joinRef, topic string) ([]byte, bool, error) {
	return appendV1Message(dst, topic, "phx_close", joinRef, nil), false, nil
}

func (v1Serializer) AppendError(dst []byte, joinRef, topic string) ([]byte, bool, error) {
	return appendV1Message(dst, topic, "phx_error", joinRef, nil), false, nil
}

func appendV1Message(dst []byte, topic, event, ref string, payload []byte) []byte {
	dst = slices.Grow(dst, 40+jsonStringSize(event)+jsonStringSize(ref)+jsonStringSize(topic)+len(payload))
	dst = append(dst, `{"event":`...)
	dst = AppendJSONString(dst, event)
	dst = append(dst, `,"payload":`...)
	dst = appendPayload(dst, payload)
	dst = append(dst, `,"ref":`...)
	return appendV1Tail(dst, ref, topic)
}

// appendV1Tail writes `ref,"topic":"..."}` after the `"ref":` key.
func appendV1Tail(dst []byte, ref, topic string) []byte {
	dst = appendNullableString(dst, ref)
	dst = append(dst, `,"topic":`...)
	dst = AppendJSONString(dst, topic)
	return append(dst, '}')
}
