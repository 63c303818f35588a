package rooms

import (
	"context"
	"sync"

	"github.com/nats-io/nats.go/jetstream"
)

// DefaultMemberCacheSize bounds the membership cache of each roomsvc
// instance: some 10 MB with the longest ids, far less with usual ones.
const DefaultMemberCacheSize = 10000

// memberCache remembers memberships found in the bucket, so that checking
// every push to a private room costs no KV round trip. It holds only
// positive answers, at most max of them (when full it starts over), and
// forgets one as soon as a delete of its key is seen: done by this instance
// (Store.Revoke) or delivered by a watch of the bucket (any instance).
//
// A lookup that read the bucket before a delete must not cache its answer
// after the delete was seen: add takes the generation read before the
// lookup, and every forget moves the generation on, so such an answer is
// dropped (with any other answer in flight then: a miss, not an error).
type memberCache struct {
	w   jetstream.KeyWatcher
	max int

	mu      sync.Mutex
	members map[string]struct{}
	gen     uint64
	dead    bool // the watch ended: trust nothing
}

// watchMembers starts the watch of kv (only changes from now on: the cache
// starts empty) and returns the cache it keeps.
func watchMembers(kv jetstream.KeyValue, max int) (*memberCache, error) {
	if max <= 0 {
		max = DefaultMemberCacheSize
	}
	// The watch lives as long as the Store. nats.go resumes it after a NATS
	// failure from the last change it delivered, so no delete is missed.
	w, err := kv.WatchAll(context.Background(), jetstream.UpdatesOnly(), jetstream.MetaOnly())
	if err != nil {
		return nil, err
	}
	c := &memberCache{w: w, max: max, members: make(map[string]struct{})}
	go c.run()
	return c, nil
}

func (c *memberCache) run() {
	for e := range c.w.Updates() {
		if e != nil && e.Operation() != jetstream.KeyValuePut {
			c.forget(e.Key())
		}
	}
	c.mu.Lock()
	c.dead = true
	c.members = make(map[string]struct{})
	c.mu.Unlock()
}

func (c *memberCache) has(key string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.members[key]
	return ok
}

// generation is read before a lookup of the bucket, for add.
func (c *memberCache) generation() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen
}

// add caches a membership read from the bucket, unless a delete was seen
// since generation gen.
func (c *memberCache) add(key string, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead || c.gen != gen {
		return
	}
	if len(c.members) >= c.max {
		c.members = make(map[string]struct{})
	}
	c.members[key] = struct{}{}
}

func (c *memberCache) forget(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.members, key)
	c.gen++
}

func (c *memberCache) stop() { _ = c.w.Stop() }
