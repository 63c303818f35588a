package ws

import (
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/phxnats/phxnats/gateway/wsframe"
)

// Sockets are read by a few shared pollers rather than a goroutine each.
//
// A reader goroutine parked in gorilla's ReadMessage holds about 4 KiB of
// stack for as long as its socket is idle, which at 10,000 idle sockets
// was the larger part of the gateway's memory. A poller is an epoll
// instance with one worker goroutine: the worker reads a socket that has
// data into a buffer of its own, acts on the frames in it, and keeps
// nothing per socket but the bytes of a frame not yet complete.
//
// The socket stays in Go's own network poller, where no goroutine waits
// on it, and its descriptor stays the net.Conn's, which the write pool
// writes through. It is registered one-shot, so that exactly one goroutine
// reads it at a time: the worker, or the goroutine running a join or push,
// which re-arms it once done. That goroutine and the worker are the only
// ones that close the descriptor, after taking it out of epoll, so a
// descriptor number is never confused with a later socket's; anyone else
// ending the socket shuts it down (closeConn), which the reader sees as
// the end of the stream.

// pollingAvailable: sockets are polled here unless Config.GoroutineReaders.
const pollingAvailable = true

// pollState is what a polled socket keeps: no more than a pointer's worth
// of buffer while idle.
type pollState struct {
	p        *poller
	fd       int
	id       uint64 // key in p.conns, carried by the socket's epoll events
	frames   clientFrames
	partial  []byte // the start of a frame not yet complete, nil when none
	stopIdle func() bool
	// held is what frames and partial hold (their capacity), as counted
	// in the Server's unfinished bytes.
	held int64
}

// poller is one epoll instance and its worker.
type poller struct {
	epfd int
	file *os.File        // epfd, in Go's network poller
	rc   syscall.RawConn // of file, for the worker to wait on
	buf  []byte          // only the worker reads into it

	mu     sync.Mutex
	conns  map[uint64]*conn
	closed bool // no socket is added any more; the epoll instance is closed
}

// pollBufSize is a worker's read buffer: a read takes whatever a client
// sent, typically a few small frames.
const pollBufSize = 64 << 10

// pollEvents: readable, or the peer's end; one-shot, so a socket is read
// by one goroutine at a time. Level-triggered, so a socket re-armed with
// data still unread is reported again.
const pollEvents = syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT

// pollers are a Server's: started with its first socket.
type pollers struct {
	once sync.Once
	list []*poller // nil when epoll is not available
	next atomic.Uint32
	ids  atomic.Uint64
}

func (ps *pollers) start() {
	for range runtime.GOMAXPROCS(0) {
		p, err := newPoller()
		if err != nil {
			break // the sockets not polled get reader goroutines
		}
		ps.list = append(ps.list, p)
		go p.work()
	}
}

// close closes the pollers that hold no socket, which ends their workers.
// One still holding a socket (a drain that ran out of time) is left
// running: its sockets end through it, and the number of its epoll
// descriptor must not be reused while they do.
func (ps *pollers) close() {
	ps.once.Do(func() {}) // none start after this
	for _, p := range ps.list {
		p.mu.Lock()
		if len(p.conns) == 0 && !p.closed {
			p.closed = true
			_ = p.file.Close()
		}
		p.mu.Unlock()
	}
}

// newPoller makes an epoll instance that Go's own network poller watches
// in turn: its worker waits parked like any goroutine waiting on a
// socket, not in a blocking epoll_wait, which would hold a thread of its
// own and, once woken, have to win a P back from busy goroutines.
func newPoller() (*poller, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	if err := syscall.SetNonblock(epfd, true); err != nil {
		_ = syscall.Close(epfd)
		return nil, err
	}
	f := os.NewFile(uintptr(epfd), "epoll")
	rc, err := f.SyscallConn()
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	return &poller{epfd: epfd, file: f, rc: rc, buf: make([]byte, pollBufSize), conns: make(map[uint64]*conn)}, nil
}

// newPollState picks a poller for a socket, or returns nil when it is to
// have a reader goroutine. It is called before the socket is shared, since
// other goroutines read c.rd, and startPolling then starts the polling.
func (s *Server) newPollState(raw syscall.RawConn) *pollState {
	if s.cfg.GoroutineReaders || raw == nil {
		return nil
	}
	ps := &s.pollers
	ps.once.Do(ps.start)
	if len(ps.list) == 0 {
		return nil
	}
	fd := -1
	if raw.Control(func(s uintptr) { fd = int(s) }) != nil {
		return nil
	}
	p := ps.list[int(ps.next.Add(1))%len(ps.list)]
	return &pollState{p: p, fd: fd, id: ps.ids.Add(1)}
}

// startPolling hands the socket to its poller; false means it needs a
// reader goroutine after all. gorilla refuses a client that sent data
// before the handshake was done, so nothing is left in gorilla's read
// buffer for the poller to miss.
func (c *conn) startPolling() bool {
	rd := c.rd
	if rd == nil {
		return false
	}
	rd.p.mu.Lock()
	if rd.p.closed {
		rd.p.mu.Unlock()
		c.rd = nil
		return false
	}
	rd.stopIdle = c.watchIdle()
	rd.p.conns[rd.id] = c
	rd.p.mu.Unlock()
	ev := syscall.EpollEvent{Events: pollEvents, Fd: int32(rd.id), Pad: int32(rd.id >> 32)}
	if err := syscall.EpollCtl(rd.p.epfd, syscall.EPOLL_CTL_ADD, rd.fd, &ev); err != nil {
		// Out of epoll watches: the goroutine reader works with a socket
		// that closeConn shuts down as well.
		c.srv.cfg.Logger.Warn("epoll registration failed, reading with a goroutine", "err", err)
		rd.p.mu.Lock()
		delete(rd.p.conns, rd.id)
		rd.p.mu.Unlock()
		rd.stopIdle()
		return false
	}
	return true
}

func (p *poller) work() {
	events := make([]syscall.EpollEvent, 256)
	var n int
	wait := func(fd uintptr) bool {
		for {
			var err error
			n, err = syscall.EpollWait(int(fd), events, 0)
			if err != syscall.EINTR {
				return n > 0 // nothing else can fail on a valid epoll fd
			}
		}
	}
	for {
		if p.rc.Read(wait) != nil {
			return // the Server closed the poller
		}
		for _, ev := range events[:n] {
			id := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			p.mu.Lock()
			c := p.conns[id]
			p.mu.Unlock()
			if c != nil {
				c.readPolledSafe(p.buf)
			}
		}
	}
}

// readPolledSafe is readPolled for a worker: a panic ends the socket
// (1011), not the worker and its other sockets.
func (c *conn) readPolledSafe(buf []byte) {
	defer c.recoverPanic("poller", func() { c.endPolled(ClosePanic, "internal error", false) })
	c.readPolled(buf)
}

// readPolled reads what the socket holds and acts on it; the socket is
// the caller's until it is re-armed, handed to a goroutine or ended.
func (c *conn) readPolled(buf []byte) {
	rd := c.rd
	var n int
	var err error
	for {
		n, err = syscall.Read(rd.fd, buf)
		if err != syscall.EINTR {
			break
		}
	}
	switch {
	case err == syscall.EAGAIN:
	case err != nil || n == 0:
		c.endPolled(0, "", false)
		return
	case rd.partial != nil:
		data := append(rd.partial, buf[:n]...)
		rd.partial = nil
		if !c.consume(data, true) {
			return
		}
	default:
		if !c.consume(buf[:n], false) {
			return
		}
	}
	c.rearm()
}

func (c *conn) rearm() {
	rd := c.rd
	ev := syscall.EpollEvent{Events: pollEvents, Fd: int32(rd.id), Pad: int32(rd.id >> 32)}
	if syscall.EpollCtl(rd.p.epfd, syscall.EPOLL_CTL_MOD, rd.fd, &ev) != nil {
		c.endPolled(0, "", false)
	}
}

// consume acts on the frames in data, which is the socket's own (owned)
// or the worker's buffer. It reports false when the socket is no longer
// the caller's: it ended.
func (c *conn) consume(data []byte, owned bool) bool {
	rd := c.rd
	whole := len(data)
	for {
		r, n := rd.frames.next(data, c.srv.cfg.MaxFrameSize)
		data = data[n:]
		switch r.event {
		case frameMore:
			if n == 0 {
				rd.keep(data, owned && len(data) == whole, r.need)
				return c.holdPolled()
			}
		case frameMessage:
			c.received(r.data, r.binary) // the session copies what it keeps
		case framePing:
			_ = c.onPing(string(r.data))
		case frameClose:
			c.endPolled(r.code, "", false)
			return false
		case frameError:
			if r.code == wsframe.CloseMessageTooBig {
				c.srv.cfg.Logger.Info("frame over the size limit, closing socket", "limit", c.srv.cfg.MaxFrameSize)
			}
			c.endPolled(r.code, r.text, true)
			return false
		}
	}
}

// keep holds the start of a frame not yet complete until more is read,
// with room for need bytes (the whole frame, when its header is here). It
// keeps data's own storage only when reuse says data is the socket's and
// starts it (nothing before data would be kept unseen) and that storage
// is not much larger than what is kept; otherwise it copies.
func (rd *pollState) keep(data []byte, reuse bool, need int) {
	size := max(need, len(data))
	switch {
	case len(data) == 0:
		rd.partial = nil
	case reuse && cap(data) >= size && cap(data) <= 2*size:
		rd.partial = data
	default:
		rd.partial = append(make([]byte, 0, size), data...)
	}
}

// holdPolled counts what the socket now holds of messages not yet
// complete against MaxUnfinishedBytes; over it, it ends the socket with
// CloseOverBudget and reports false.
func (c *conn) holdPolled() bool {
	rd := c.rd
	n := int64(cap(rd.partial) + cap(rd.frames.msg))
	d := n - rd.held
	if d == 0 {
		return true
	}
	if !c.srv.hold(d) {
		c.overBudget()
		c.endPolled(CloseOverBudget, "gateway busy", true)
		return false
	}
	rd.held = n
	return true
}

// endPolled takes the socket out of its poller, then, off the caller's
// goroutine (a worker must not wait on a client or on the rooms), answers
// with a close frame when code is not 0 and ends the socket.
func (c *conn) endPolled(code int, text string, fault bool) {
	rd := c.rd
	_ = syscall.EpollCtl(rd.p.epfd, syscall.EPOLL_CTL_DEL, rd.fd, nil)
	rd.p.mu.Lock()
	delete(rd.p.conns, rd.id)
	rd.p.mu.Unlock()
	rd.partial, rd.frames = nil, clientFrames{}
	c.srv.hold(-rd.held)
	rd.held = 0
	go func() {
		if code != 0 && c.replyClose(code, text) && fault {
			c.linger() // the client may be sending still
		}
		c.end(rd.stopIdle)
	}()
}

// shutdownFD ends a polled socket's stream both ways; its reader then
// reads the end of it.
func shutdownFD(fd uintptr) { _ = syscall.Shutdown(int(fd), syscall.SHUT_RDWR) }
