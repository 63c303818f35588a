package session

import (
	"context"

	"github.com/phxnats/phxnats/gateway/wire"
)

// Frame is one encoded message for a client. Data is shared between
// sockets (one broadcast is encoded once for all) and must never be
// modified.
type Frame struct {
	Data   []byte
	Binary bool
}

// Transport is what a session needs from its connection: the one contract
// between the protocol and the WebSocket and long-poll transports. The
// fan-out reaches a transport only through its session.
type Transport interface {
	// Serializer is the wire format the client speaks. It never changes.
	Serializer() wire.Serializer
	// Deliver queues f for sending. It must not block (the fan-out calls
	// it under a room's lock); a transport whose queue is full closes
	// itself as a slow consumer.
	Deliver(f Frame)
	// Close ends the connection as d says. It must not block and may be
	// called more than once; the first call wins.
	Close(d Disconnect)
}

// Disconnect is why and how the server ends a connection.
type Disconnect struct {
	// Code is the WebSocket close code; long-poll has no codes.
	Code   int
	Reason string
	// Now drops what is queued and ends the connection without a closing
	// handshake; otherwise the client first gets what was queued.
	Now bool
}

// The disconnects the gateway sends from outside a connection. phoenix.js
// reconnects after any code but 1000.
var (
	// DisconnectUser ends a user's sockets on request (logout, ban): 1001,
	// as Phoenix's "disconnect" broadcast on the socket id.
	DisconnectUser = Disconnect{Code: 1001, Reason: "disconnected"}
	// DisconnectShutdown drains the gateway: 1012, as Phoenix's drainer.
	DisconnectShutdown = Disconnect{Code: 1012, Reason: "server shutting down"}
	// DisconnectPanic ends a socket whose handling panicked: 1011, as a
	// crashed Bandit connection.
	DisconnectPanic = Disconnect{Code: 1011, Reason: "internal error", Now: true}
	// DisconnectShutdownNow ends what is left when the drain's time is up.
	DisconnectShutdownNow = Disconnect{Code: 1012, Reason: "server shutting down", Now: true}
	// DisconnectNoNATS ends the sockets of a gateway that has been without
	// NATS for too long (gateway.nats_grace): 1013, try again later,
	// which phoenix.js answers by reconnecting.
	DisconnectNoNATS = Disconnect{Code: 1013, Reason: "nats unavailable"}
)

// Rooms is the fan-out as a session sees it (fanout.Hub).
type Rooms interface {
	// Join adds s to topic's room and returns once broadcasts stored from
	// now on will reach it, with the room stream's position when it
	// entered (it gets only later broadcasts). want is what its channel
	// asked for beyond the guide (nil: nothing); joining again replaces
	// it. A channel with want.History is held until Release.
	Join(ctx context.Context, topic string, s *Session, want *Want) (uint64, error)
	// Release hands a held channel its broadcasts after position after,
	// and only those from then on.
	Release(topic string, s *Session, after uint64)
	// Leave takes s out of topic's room; leaving a room one is not in
	// does nothing.
	Leave(topic string, s *Session)
}

// Registry is the gateway's table of sessions (registry.Registry): by
// connection and by user, for kicks, forced disconnects and the drain.
type Registry interface {
	// Add registers s; it reports false while the gateway drains, and s
	// is then to be refused or closed.
	Add(s *Session) bool
	// Remove forgets s.
	Remove(s *Session)
}

// Off, as a limit or a wait in the gateway's options (a rate limit, the
// rooms' linger), turns it off: no limit, no wait. Zero means the default.
const Off = -1
