package rooms

import (
	"sync"
	"time"

	"github.com/phxnats/phxnats/proto"
)

// Per-room budget: what one room may broadcast into proto.RoomStream, so
// that a flood of one room neither crowds the others out of the stream
// (whose size bounds how long a gateway can be away and still catch up)
// nor costs every gateway its fan-out. It is a token bucket per room, in
// broadcasts and in bytes, kept by each roomsvc instance on its own:
// instances share nothing, so a room's budget is this times the number of
// instances serving it. A broadcast over it is not sent: a new_msg gets
// {"reason": ReasonRoomBusy}, a user_joined announcement is left out.

// Defaults of the room budget (rooms.room_rate_limit, rooms.room_bytes_limit).
// 100 messages a second is far above a chat among people; 256 KiB a second
// is 15 MiB a minute (the stream's age), so it takes 17 rooms flooding at
// once, per instance, to fill the stream's default 256 MiB.
const (
	DefaultRoomRateLimit  = 100
	DefaultRoomBytesLimit = 256 << 10
)

// ReasonRoomBusy refuses a message over its room's budget.
const ReasonRoomBusy = "room rate limit exceeded"

// maxBudgetRooms bounds the rooms whose budget an instance remembers. A
// room's bucket is forgotten once it is full again (a new one is the
// same); past this many rooms in debt at once, an arbitrary one is
// forgotten, which only forgives it.
const maxBudgetRooms = 100_000

// Off turns a budget off (rooms.room_rate_limit -1), as session.Off does
// the gateway's limits.
const Off = -1

// budget is the per-room token buckets of one instance.
type budget struct {
	rate, burst         float64 // broadcasts per second; 0: no limit
	byteRate, byteBurst float64 // bytes per second; 0: no limit
	refill              time.Duration
	mu                  sync.Mutex
	rooms               map[string]*bucket
	now                 func() time.Time
}

type bucket struct {
	msgs, bytes float64
	at          time.Time
}

// newBudget makes the buckets for rate broadcasts and byteRate bytes a
// second per room (<= 0: that dimension is not limited). Bursts are two
// seconds' worth, and at least the largest broadcast the stream stores, so
// any message fits a quiet room.
func newBudget(rate, byteRate float64) *budget {
	b := &budget{rooms: make(map[string]*bucket), now: time.Now}
	if rate > 0 {
		b.rate, b.burst = rate, max(2*rate, 1)
		b.refill = time.Duration(b.burst / b.rate * float64(time.Second))
	}
	if byteRate > 0 {
		b.byteRate, b.byteBurst = byteRate, max(2*byteRate, proto.RoomStreamMaxMsgSize)
		b.refill = max(b.refill, time.Duration(b.byteBurst/b.byteRate*float64(time.Second)))
	}
	return b
}

// allow takes one broadcast of size bytes from topic's budget; it reports
// false, taking nothing, when the room has not that much left.
func (b *budget) allow(topic string, size int) bool {
	if b == nil || (b.rate == 0 && b.byteRate == 0) {
		return true
	}
	now := b.now()
	b.mu.Lock()
	defer b.mu.Unlock()
	k := b.rooms[topic]
	if k == nil {
		if len(b.rooms) >= maxBudgetRooms {
			b.forget(now)
		}
		k = &bucket{msgs: b.burst, bytes: b.byteBurst, at: now}
		b.rooms[topic] = k
	}
	if el := now.Sub(k.at).Seconds(); el > 0 {
		k.msgs = min(b.burst, k.msgs+el*b.rate)
		k.bytes = min(b.byteBurst, k.bytes+el*b.byteRate)
		k.at = now
	}
	if (b.rate > 0 && k.msgs < 1) || (b.byteRate > 0 && k.bytes < float64(size)) {
		return false
	}
	k.msgs--
	k.bytes -= float64(size)
	return true
}

// forget drops the buckets that are full again, or one at random when
// none is. b.mu is held.
func (b *budget) forget(now time.Time) {
	for topic, k := range b.rooms {
		if now.Sub(k.at) >= b.refill {
			delete(b.rooms, topic)
		}
	}
	for topic := range b.rooms {
		if len(b.rooms) < maxBudgetRooms {
			return
		}
		delete(b.rooms, topic)
	}
}

// size is what a broadcast costs the room's byte budget: about its size
// in the stream.
func size(topic string, b proto.Broadcast) int {
	return len(topic) + len(b.Event) + len(b.Payload) + len(b.Binary)*4/3 + len(b.From) + len(b.OptIn) + 64
}
