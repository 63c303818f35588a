//go:build linux

package phx

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/gorilla/websocket"

	"github.com/phxnats/phxnats/gateway/wsframe"
)

// Poller reads many sockets from a few goroutines, one epoll instance each.
//
// A goroutine per socket reading through gorilla costs the load generator
// a read syscall and a goroutine wake-up per frame, which at 10,000
// subscribers made it a bigger consumer of CPU than the server it
// measures. A poller worker instead reads whatever a socket holds into one
// large buffer and parses every frame in it, so the busier the machine,
// the more frames each read syscall brings.
//
// Sockets handed to a poller leave Go's own network poller (their
// descriptor is duplicated and the original closed), so an arrival wakes
// one worker and nothing else. Writes (joins, heartbeats, the close
// handshake) go straight to the descriptor; they are rare.
type Poller struct {
	workers    []*pollWorker
	round      time.Duration
	afterBatch func(worker int)
	mu         sync.Mutex
	next       int
	wg         sync.WaitGroup
	stop       chan struct{}
}

type pollWorker struct {
	p    *Poller
	idx  int
	epfd int
	buf  []byte

	mu      sync.Mutex
	conns   map[int32]*Conn
	leaving []*Conn
}

// pollReadSize is one worker's read buffer: with ~100-byte frames a read
// can bring hundreds of them.
const pollReadSize = 256 << 10

// pollMaxFrame bounds a frame the poller will assemble.
const pollMaxFrame = 64 << 20

// NewPoller starts workers goroutines. Each reads its sockets at most once
// per round: a worker that finished early sleeps out the rest, so frames
// pile up and one read takes several. That costs up to a round of latency
// and saves a read, an epoll_wait and a wake-up for every frame that
// shares it; it also spares the server waking the reader per write.
//
// afterBatch, when not nil, runs on a worker after each round of reads, so
// a caller can keep per-worker tallies (Frame.Worker) and publish them in
// bulk instead of touching shared counters once per frame.
func NewPoller(workers int, round time.Duration, afterBatch func(worker int)) (*Poller, error) {
	p := &Poller{round: round, afterBatch: afterBatch, stop: make(chan struct{})}
	for i := range max(workers, 1) {
		epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
		if err != nil {
			p.Close()
			return nil, fmt.Errorf("epoll: %w", err)
		}
		w := &pollWorker{p: p, idx: i, epfd: epfd, buf: make([]byte, pollReadSize), conns: make(map[int32]*Conn)}
		p.workers = append(p.workers, w)
	}
	for _, w := range p.workers {
		p.wg.Add(1)
		go w.run()
	}
	return p, nil
}

// Workers is the number of worker goroutines (Frame.Worker is below it).
func (p *Poller) Workers() int { return len(p.workers) }

// Close stops the workers and closes the sockets they still hold. Close
// the sockets first to end them with a close handshake.
func (p *Poller) Close() {
	select {
	case <-p.stop:
		return
	default:
	}
	close(p.stop)
	p.wg.Wait()
	for _, w := range p.workers {
		_ = syscall.Close(w.epfd)
	}
}

// adopt moves c's connection from gorilla to a worker.
func (p *Poller) adopt(c *Conn, nc net.Conn) error {
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return errors.New("poller: not a TCP connection")
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return err
	}
	fd := -1
	var derr error
	if err := rc.Control(func(s uintptr) { fd, derr = syscall.Dup(int(s)) }); err != nil {
		return err
	}
	if derr != nil {
		return derr
	}
	syscall.CloseOnExec(fd)
	// The duplicate shares the open socket (and its O_NONBLOCK); closing
	// the original takes it out of Go's epoll without a FIN.
	_ = nc.Close()
	c.fd = fd
	p.mu.Lock()
	w := p.workers[p.next%len(p.workers)]
	p.next++
	p.mu.Unlock()
	c.poll = w
	w.mu.Lock()
	w.conns[int32(fd)] = c
	w.mu.Unlock()
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP, Fd: int32(fd)}
	if err := syscall.EpollCtl(w.epfd, syscall.EPOLL_CTL_ADD, fd, &ev); err != nil {
		w.mu.Lock()
		delete(w.conns, int32(fd))
		w.mu.Unlock()
		_ = syscall.Close(fd)
		return fmt.Errorf("epoll add: %w", err)
	}
	return nil
}

// release asks c's worker to close it; the worker closes c.done.
func (w *pollWorker) release(c *Conn) {
	w.mu.Lock()
	w.leaving = append(w.leaving, c)
	w.mu.Unlock()
}

func (w *pollWorker) run() {
	defer w.p.wg.Done()
	events := make([]syscall.EpollEvent, 512)
	var roundStart time.Time
	for {
		if w.p.round > 0 {
			if d := w.p.round - time.Since(roundStart); d > 0 {
				time.Sleep(d)
			}
			roundStart = time.Now()
		}
		select {
		case <-w.p.stop:
			w.mu.Lock()
			conns := make([]*Conn, 0, len(w.conns))
			for _, c := range w.conns {
				conns = append(conns, c)
			}
			w.mu.Unlock()
			for _, c := range conns {
				w.drop(c, net.ErrClosed)
			}
			return
		default:
		}
		// The timeout bounds how long a release waits.
		n, err := syscall.EpollWait(w.epfd, events, 20)
		if err != nil && !errors.Is(err, syscall.EINTR) {
			return
		}
		now := time.Now().UnixNano()
		for i := range max(n, 0) {
			w.mu.Lock()
			c := w.conns[events[i].Fd]
			w.mu.Unlock()
			if c != nil {
				w.readConn(c, now)
			}
		}
		// More ready sockets than events: take them now, in this round.
		for n == len(events) {
			if n, err = syscall.EpollWait(w.epfd, events, 0); err != nil {
				break
			}
			for i := range n {
				w.mu.Lock()
				c := w.conns[events[i].Fd]
				w.mu.Unlock()
				if c != nil {
					w.readConn(c, now)
				}
			}
		}
		w.mu.Lock()
		leaving := w.leaving
		w.leaving = nil
		w.mu.Unlock()
		for _, c := range leaving {
			w.drop(c, net.ErrClosed)
		}
		if n > 0 && w.p.afterBatch != nil {
			w.p.afterBatch(w.idx)
		}
	}
}

// readConn reads what c holds and hands every complete frame on.
func (w *pollWorker) readConn(c *Conn, now int64) {
	for {
		data := w.buf[:0]
		if len(c.pending) > 0 {
			if len(c.pending)+pollReadSize/2 > cap(data) {
				data = make([]byte, 0, len(c.pending)+pollReadSize)
			}
			data = append(data, c.pending...)
		}
		space := data[len(data):cap(data)]
		n, err := syscall.Read(c.fd, space)
		switch {
		case errors.Is(err, syscall.EINTR):
			continue
		case errors.Is(err, syscall.EAGAIN):
			return
		case err != nil:
			w.drop(c, err)
			return
		case n == 0:
			w.drop(c, io.ErrUnexpectedEOF)
			return
		}
		data = data[:len(data)+n]
		rest, frames, cerr := c.consume(data, w.idx, now)
		if frames > 0 {
			c.stats.FramesIn.Add(int64(frames))
		}
		if cerr != nil {
			w.drop(c, cerr)
			return
		}
		c.pending = append(c.pending[:0], rest...)
		if cap(c.pending) > 64<<10 && len(c.pending) < 4<<10 {
			c.pending = append([]byte(nil), c.pending...) // do not keep a rare large frame's buffer
		}
		if n < len(space) {
			return // drained; level-triggered epoll reports what comes next
		}
	}
}

// drop closes c's descriptor on its worker, so no read can hit a reused
// descriptor number.
func (w *pollWorker) drop(c *Conn, err error) {
	w.mu.Lock()
	_, ok := w.conns[int32(c.fd)]
	if ok {
		delete(w.conns, int32(c.fd))
	}
	w.mu.Unlock()
	if !ok {
		return
	}
	_ = syscall.EpollCtl(w.epfd, syscall.EPOLL_CTL_DEL, c.fd, nil)
	c.wmu.Lock()
	_ = syscall.Close(c.fd)
	c.fdClosed = true
	c.wmu.Unlock()
	c.finish(err)
}

// consume parses the complete frames at the start of b and returns the
// incomplete rest.
func (c *Conn) consume(b []byte, worker int, now int64) (rest []byte, frames int, err error) {
	for len(b) >= 2 {
		h, hl, err := wsframe.ParseHeader(b)
		fin, op := h.Fin, int(h.Op)
		if h.Masked {
			return nil, frames, errors.New("server frame is masked")
		}
		if err != nil {
			return nil, frames, err
		}
		if hl == 0 {
			return b, frames, nil
		}
		n := h.Length
		if n > pollMaxFrame {
			return nil, frames, fmt.Errorf("frame of %d bytes", n)
		}
		if uint64(len(b)-hl) < n {
			return b, frames, nil
		}
		payload := b[hl : hl+int(n)]
		b = b[hl+int(n):]
		switch op {
		case websocket.TextMessage, websocket.BinaryMessage, 0:
			if op != 0 {
				c.frag = c.frag[:0]
			}
			if !fin || op == 0 {
				c.frag = append(c.frag, payload...)
				if !fin {
					continue
				}
				payload = c.frag
			}
			frames++
			c.in.Worker, c.in.At = worker, now
			c.handle(payload, &c.in)
		case websocket.CloseMessage:
			code, text := websocket.CloseNoStatusReceived, ""
			if len(payload) >= 2 {
				code, text = int(binary.BigEndian.Uint16(payload)), string(payload[2:])
			}
			if !c.closing.Load() {
				_ = c.writeFrame(websocket.CloseMessage, payload[:min(len(payload), 2)])
			}
			return nil, frames, &websocket.CloseError{Code: code, Text: text}
		case websocket.PingMessage:
			_ = c.writeFrame(websocket.PongMessage, payload)
		}
	}
	return b, frames, nil
}

// writeRaw writes b to the descriptor, waiting out a full send buffer.
// The caller holds c.wmu.
func (c *Conn) writeRaw(b []byte) error {
	if c.fdClosed {
		return net.ErrClosed
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(b) > 0 {
		n, err := syscall.Write(c.fd, b)
		switch {
		case errors.Is(err, syscall.EINTR):
			continue
		case errors.Is(err, syscall.EAGAIN):
			if time.Now().After(deadline) {
				return errors.New("write timeout")
			}
			time.Sleep(time.Millisecond)
			continue
		case err != nil:
			return err
		}
		b = b[n:]
	}
	return nil
}
