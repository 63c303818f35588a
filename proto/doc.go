// Package proto is the contract between the gateway, authsvc, roomsvc and any
// other service on the same NATS: the subjects, who publishes and subscribes
// on each, and the JSON payloads.
//
// # Overview
//
//	browser ──Phoenix protocol──▶ gateway ──phx.auth.verify (req/reply)──▶ authsvc
//	                                 │ ──phx.svc.rooms.join / .push (req/reply)──▶ roomsvc
//	                                 ◀── stream PHX_ROOMS ◀── phx.room.<topic> ── roomsvc, other services
//
// Every payload is JSON. Requests go to queue groups, so services are
// stateless and scale by starting more instances; broadcasts are stored in
// the JetStream stream RoomStream and read by each gateway with one
// consumer of the whole stream, so that none is lost or reordered when NATS
// fails.
//
// # Topics and subjects
//
// A Phoenix topic is client text. It reaches a subject only through
// EncodeTopic, whose output can never contain '.', '*', '>' or white space:
// a topic cannot widen a subscription or address another room.
//
// # Publishing into a room from another service
//
// Publish the JSON {"event": E, "payload": P} on RoomSubject(topic), or call
// Publish, which waits for the stream's acknowledgement. P must be a JSON object and E must not start with "phx_";
// gateways drop anything else with a log line and a metric.
//
// # Join parameters
//
// A client that joins without parameters gets exactly the frames of the
// Phoenix channels guide. More is asked for in the phx_join payload, one
// key each with the value true (JoinFlags reads them): JoinSender (the
// sender's "user_id" in payloads of broadcasts that have a From),
// JoinJoins (roomsvc's user_joined), JoinIgnore (the user's ignore list
// applies to the channel). A Broadcast whose OptIn is K reaches only the
// channels joined with {K: true}. The service of the topic receives the
// whole payload in JoinRequest.Payload.
//
// Two keys take more than true: JoinPresence (true: Phoenix Presence, see
// PresenceBucket and SubjectPresenceList) and JoinHistory ({"last": N} or
// {"since": position}: the room's recent broadcasts in the join reply and
// a gap-free resume, see HistoryStream and HistorySubject).
package proto
