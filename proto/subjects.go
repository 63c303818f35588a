package proto

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
)

// Auth subjects. authsvc instances subscribe to both in the queue group
// QueueAuth, so any number of them share the load.
const (
	// SubjectAuthVerify: request/reply. The gateway sends a VerifyRequest when
	// a socket connects with a token; authsvc answers a VerifyReply.
	SubjectAuthVerify = "phx.auth.verify"

	// SubjectAuthSign: request/reply. The development login (and operator
	// tools) send a SignRequest; authsvc answers a SignReply. Production
	// deployments should let only trusted users publish here (NATS permissions).
	SubjectAuthSign = "phx.auth.sign"

	// SubjectAuthBan: request/reply. Operators (chatctl ban) send a
	// BanRequest; authsvc stores the user's not-before time in BanBucket,
	// publishes DisconnectSubject for the user and answers a BanReply.
	// From then on authsvc refuses (TokenRevoked) every token of the user
	// signed before that time: the sockets it closed cannot come back with
	// the token they had.
	SubjectAuthBan = "phx.auth.ban"

	// SubjectAuthUnban: request/reply. A BanRequest (For is ignored);
	// authsvc moves the user's not-before time to now, so that tokens
	// issued from now on are accepted and the ones from before the ban stay
	// refused. Answers a BanReply.
	SubjectAuthUnban = "phx.auth.unban"

	// QueueAuth is the queue group of authsvc subscribers.
	QueueAuth = "authsvc"

	// BanBucket is the JetStream KV bucket of per-user not-before times:
	// key EncodeKey(user id), value a JSON object written and read by
	// authsvc only, which creates the bucket at start. Every authsvc reads
	// it once per token verification.
	BanBucket = "phx_user_bans"
)

// Room subjects.
const (
	// RoomSubjectPrefix starts every room broadcast subject; the rest is the
	// room topic encoded by EncodeTopic. See RoomSubject.
	RoomSubjectPrefix = "phx.room."

	// RoomSubjectAll matches every room broadcast, for monitoring tools.
	RoomSubjectAll = RoomSubjectPrefix + ">"

	// QueueRooms is the queue group of roomsvc subscribers.
	QueueRooms = "roomsvc"

	// ServiceRooms is the service name roomsvc answers for, as used in
	// JoinSubject, PushSubject and the gateway's routes.
	ServiceRooms = "rooms"
)

// RoomSubject is the subject on which every message for the Phoenix topic is
// broadcast: "phx.room." + EncodeTopic(topic).
//
// Publishers: roomsvc (after it accepted a new_msg) and any other service
// that wants to post into a room (see Publish). The stream RoomStream
// stores every message on these subjects; readers: every gateway with at
// least one local socket joined to any room, with one consumer of the
// whole stream, which hands each message to the sockets joined to its
// topic. Payload: Broadcast as JSON, e.g.
// {"event":"new_msg","payload":{"body":"hi"}}.
//
// The broadcast reaches phoenix.js as [null,null,topic,event,payload]
// (Phoenix's fastlane broadcast) on every socket joined to the topic.
func RoomSubject(topic string) (string, error) {
	tok, err := EncodeTopic(topic)
	if err != nil {
		return "", err
	}
	return RoomSubjectPrefix + tok, nil
}

var serviceName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`)

// ValidService reports whether name can be used as a service name in
// JoinSubject and PushSubject: lower-case letters, digits, '_' and '-'.
func ValidService(name string) error {
	if !serviceName.MatchString(name) {
		return fmt.Errorf("proto: bad service name %q: want %s", name, serviceName)
	}
	return nil
}

// JoinSubject is where the gateway asks the service that owns a topic
// whether a socket may join it: "phx.svc.<service>.join".
//
// Publisher: the gateway, with a JoinRequest, as a request. Subscribers: the
// service's instances in one queue group. Reply: a Reply with status "ok" or
// "error" and the response map that phoenix.js receives.
func JoinSubject(service string) string { return "phx.svc." + service + ".join" }

// PushSubject is where the gateway hands a client event on a joined topic to
// the service that owns it: "phx.svc.<service>.push".
//
// Publisher: the gateway, with a PushRequest, as a request. Subscribers: the
// service's instances in one queue group. Reply: a Reply with status "ok",
// "error" or "noreply" (no phx_reply is sent to the client, like Phoenix's
// {:noreply, socket}). A service must publish any broadcast the event causes
// before it replies, so that one client's pushes are broadcast in order even
// when several instances share the queue group.
func PushSubject(service string) string { return "phx.svc." + service + ".push" }

// JoinedSubject is where the gateway confirms a join whose reply asked for it
// (Reply.Confirm): "phx.svc.<service>.joined", sent once the socket is in
// the room, with the same JoinRequest. The service answers a Reply as for a
// join, from its current state (roomsvc: the membership, read from KV, not
// a cache); the gateway gives that reply to the client and leaves the room
// unless it is ok. The gateway asks again after a NATS reconnect, for every
// confirmed channel (a kick may have been lost meanwhile): then only a
// refusal {"reason": "unauthorized"} ends the channel, and any other error
// means the service cannot tell yet. Subscribers: the service's instances
// in one queue group.
func JoinedSubject(service string) string { return "phx.svc." + service + ".joined" }

// Membership subjects: request/reply, served by roomsvc in QueueRooms. The
// request is a MembershipRequest and the reply a MembershipReply.
const (
	// SubjectMembersGrant makes a user a member of a private room.
	SubjectMembersGrant = "phx.rooms.members.grant"
	// SubjectMembersRevoke removes a user from a private room.
	SubjectMembersRevoke = "phx.rooms.members.revoke"
	// SubjectMembersList lists the members of a room.
	SubjectMembersList = "phx.rooms.members.list"
)

// DisconnectSubjectAll matches every DisconnectSubject; each gateway holds
// one subscription on it.
const DisconnectSubjectAll = "phx.user.*.disconnect"

// DisconnectSubject closes every socket of a user on every gateway, like
// Phoenix's Endpoint.broadcast("users_socket:" <> id, "disconnect", %{}):
// "phx.user.<user>.disconnect", the user id escaped as by EncodeTopic.
//
// Publishers: operators, the login service on logout or ban. Subscribers:
// every gateway. Not request/reply; the payload is a Disconnect naming the
// same user (DisconnectMessage makes both), and gateways ignore any other:
// nats-server lets any client set any reply subject, so a JetStream
// acknowledgement or a service's reply could otherwise be aimed here. The
// sockets are closed with code 1001, after which phoenix.js reconnects, and
// a user whose token was revoked is then refused.
func DisconnectSubject(userID string) (string, error) { return userSubject(userID, "disconnect") }

// Disconnect is the payload of a DisconnectSubject message.
type Disconnect struct {
	UserID string `json:"disconnect"`
}

// DisconnectMessage returns the subject and payload that close every
// socket of userID.
func DisconnectMessage(userID string) (subject string, data []byte, err error) {
	if subject, err = DisconnectSubject(userID); err != nil {
		return "", nil, err
	}
	data, err = Marshal(Disconnect{UserID: userID})
	return subject, data, err
}

// IsDisconnect reports whether data, received on subject, is a disconnect
// of the user the subject names (and not something else aimed there).
func IsDisconnect(subject string, data []byte) (userID string, ok bool) {
	user, err := UserFromSubject(subject)
	if err != nil || !strings.HasSuffix(subject, ".disconnect") {
		return "", false
	}
	var d Disconnect
	if json.Unmarshal(data, &d) != nil || d.UserID != user {
		return "", false
	}
	return user, true
}

// KickSubjectAll matches every KickSubject; each gateway holds one
// subscription on it.
const KickSubjectAll = "phx.user.*.kick"

// KickSubject removes a user from one topic on every gateway, live:
// "phx.user.<user>.kick", the user id escaped as by EncodeTopic, with a
// Kick payload. Every socket of the user joined to the topic gets Phoenix's
// phx_close for it (phoenix.js then drops the channel and does not rejoin).
//
// Publisher: roomsvc, when a membership is revoked; operators. Subscribers:
// every gateway. Not request/reply, and core NATS: a gateway that is
// reconnecting to NATS at that moment misses it. What makes a revoke
// certain all the same: roomsvc refuses every push of a non-member to a
// private room, and confirms each join of one once the socket is in the
// room (Reply.Confirm, JoinedSubject).
func KickSubject(userID string) (string, error) { return userSubject(userID, "kick") }

// UserFromSubject returns the user id in a "phx.user.<user>.<verb>" subject
// (DisconnectSubject, KickSubject).
func UserFromSubject(subject string) (string, error) {
	rest, ok := strings.CutPrefix(subject, "phx.user.")
	i := strings.LastIndexByte(rest, '.')
	if !ok || i <= 0 {
		return "", fmt.Errorf("%w: %q is not a user subject", ErrBadToken, subject)
	}
	return DecodeTopic(rest[:i])
}

// IgnoresSubjectAll matches every IgnoresSubject; each gateway holds one
// subscription on it.
const IgnoresSubjectAll = "phx.user.*.ignores"

// IgnoresSubject carries each change of a user's ignore list to every
// gateway, so that all of the user's sockets stop (or resume) receiving
// broadcasts From the users on it: "phx.user.<user>.ignores" with an
// IgnoreUpdate payload in its diff form ({"add": [id]} or {"remove": [id]}),
// which the gateway applies to each socket's set (IgnoreUpdate.Apply). The
// whole list reaches a socket only in its join reply (Reply.Ignore).
//
// Publisher: roomsvc, after an ignore or unignore push that changed the list. Subscribers: every
// gateway. Not request/reply. The filtering happens in the gateway, per
// socket, with no call to a service per message.
func IgnoresSubject(userID string) (string, error) { return userSubject(userID, "ignores") }

func userSubject(userID, verb string) (string, error) {
	tok, err := EncodeTopic(userID)
	if err != nil {
		return "", fmt.Errorf("proto: user id: %w", err)
	}
	return "phx.user." + tok + "." + verb, nil
}
