package relay

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/time/rate"

	"github.com/porthole-dev/porthole/internal/gateway"
	"github.com/porthole-dev/porthole/proto"
	"github.com/porthole-dev/porthole/tunnel"
	"github.com/porthole-dev/porthole/tunnel/transport"
	"github.com/porthole-dev/porthole/tunnel/transport/quictransport"
)

// The UDP forwarder carries an agent's WireGuard port: each phone address that
// sends to a UDP port the agent registered (proto "udp", inside its udp_ports)
// becomes a flow with an id; its packets go to the agent as datagrams carrying the
// id, and the agent's datagrams go back to the flow's address. The relay holds no
// key and never looks into a packet. An agent can only answer flows that phones
// opened: it cannot make the relay send UDP anywhere else.
//
// A stranger can make the relay allocate flows, so they are bounded: a cap per
// agent and new flows per source address per second. Packets of flows the agent
// has not answered yet are held to a low rate per source address, all its flows
// together (garbage never gets an answer, since WireGuard drops what it can't
// authenticate); an answered flow gets a high rate of its own. Idle flows expire.

// UDP defaults (see the Config fields of the same names).
const (
	DefaultUDPFlowIdle       = 150 * time.Second
	DefaultMaxUDPFlows       = 1024
	DefaultUDPNewFlowsPerSec = 10
	DefaultUDPUnansweredPPS  = 100
	DefaultUDPAnsweredPPS    = 50000
	udpNewFlowBurst          = 20
	udpMaxSources            = 4 * DefaultMaxUDPFlows
	udpReadBuf               = 2048
	udpReadBatch             = 32
	udpLogEvery              = time.Minute
	udpDropTooBig            = "too_big"
	udpDropNotAllowed        = "not_allowed"
	udpDropFlowLimit         = "flow_limit"
	udpDropNewFlowRate       = "new_flow_rate"
	udpDropRate              = "rate"
	udpDropUnknownFlow       = "unknown_flow"
	udpDropTunnel            = "tunnel"
	udpDropAgentBudget       = "agent_budget"
	udpDropAgentQueue        = "agent_queue"
	udpMinSweep              = 10 * time.Millisecond
	udpMaxSweep              = 10 * time.Second
)

// udpDropReasons are the reasons packets are dropped, as metrics labels.
// The last two are the agent's packets to phones, counted by the tunnel: over
// the session's datagram budget, or dropped unread because the relay fell
// behind.
var udpDropReasons = [...]string{udpDropNotAllowed, udpDropTooBig, udpDropFlowLimit, udpDropNewFlowRate, udpDropRate, udpDropUnknownFlow, udpDropTunnel,
	udpDropAgentBudget, udpDropAgentQueue}

// udpLimits are the forwarder's bounds, from Config with defaults filled in.
type udpLimits struct {
	idle                       time.Duration
	maxFlows                   int
	newPerSec                  float64
	unansweredPPS, answeredPPS float64
}

func (c *Config) udpLimits() udpLimits {
	l := udpLimits{idle: c.UDPFlowIdle, maxFlows: c.MaxUDPFlows, newPerSec: c.UDPNewFlowsPerSec,
		unansweredPPS: c.UDPUnansweredPPS, answeredPPS: c.UDPAnsweredPPS}
	if l.idle <= 0 {
		l.idle = DefaultUDPFlowIdle
	}
	if l.maxFlows <= 0 {
		l.maxFlows = DefaultMaxUDPFlows
	}
	if l.newPerSec <= 0 {
		l.newPerSec = DefaultUDPNewFlowsPerSec
	}
	if l.unansweredPPS <= 0 {
		l.unansweredPPS = DefaultUDPUnansweredPPS
	}
	if l.answeredPPS <= 0 {
		l.answeredPPS = DefaultUDPAnsweredPPS
	}
	return l
}

// udpForwarder is one agent session's UDP ports and flows.
type udpForwarder struct {
	ts     *tunnel.ServerSession
	log    *slog.Logger
	lim    udpLimits
	bind   string
	wg     sync.WaitGroup // read loops and the sweeper
	stop   chan struct{}  // closed by close
	ctr    udpCounters
	logged [len(udpDropReasons)]atomic.Int64 // last log time per drop reason (unix nanos)

	mu      sync.Mutex // guards the fields below
	socks   map[uint16]*udpSock
	flows   map[uint32]*udpFlow
	byAddr  map[udpKey]*udpFlow
	sources map[netip.Addr]*udpSource
	nextID  uint32
	closed  bool
	sweeper bool // the sweeper runs

	// out is the agent's burst to phones, sent by flushOut. Only the
	// session's one datagram goroutine (fromAgent, then flushOut) touches it:
	// no lock, and none held across the sends.
	out udpOut
}

// udpOut is a burst of packets from the agent on their way to phones: copies,
// since a datagram's payload lives only during fromAgent.
type udpOut struct {
	store []byte // udpReadBuf bytes per packet
	pkts  []udpOutPkt
	msgs  []ipv4.Message
}

type udpOutPkt struct {
	fl *udpFlow
	n  int
}

type udpKey struct {
	port uint16
	addr netip.AddrPort
}

type udpSock struct {
	spec   proto.Service
	policy gateway.Policy
	pc     *net.UDPConn
	bw     *ipv4.PacketConn // pc, for batched sends (sendmmsg)
}

// udpSource is the budget of one source address.
type udpSource struct {
	newFlows   *rate.Limiter // flows it may open
	unanswered *rate.Limiter // packets of its flows the agent has not answered
}

type udpFlow struct {
	id       uint32
	sock     *udpSock
	addr     netip.AddrPort
	uaddr    *net.UDPAddr  // addr, for batched sends
	last     atomic.Int64  // unix nanos of the last packet either way
	answered atomic.Bool   // the agent has sent to this flow
	lim      *rate.Limiter // made when the agent first answers
}

type udpCounters struct {
	packetsIn, packetsOut, bytesIn, bytesOut atomic.Uint64 // in: phone to agent
	flowsTotal                               atomic.Uint64
	dropped                                  [len(udpDropReasons)]atomic.Uint64
}

// UDPStatus is an agent's WireGuard forwarding at the relay.
type UDPStatus struct {
	Ports      []uint16          `json:"ports"`
	Flows      int               `json:"flows"`       // now
	FlowsTotal uint64            `json:"flows_total"` // since the session started
	PacketsIn  uint64            `json:"packets_in"`  // phones to agent
	PacketsOut uint64            `json:"packets_out"` // agent to phones
	BytesIn    uint64            `json:"bytes_in"`
	BytesOut   uint64            `json:"bytes_out"`
	Dropped    map[string]uint64 `json:"dropped,omitempty"` // by reason
}

func newUDPForwarder(s *Server, ts *tunnel.ServerSession, log *slog.Logger) *udpForwarder {
	return &udpForwarder{ts: ts, log: log, lim: s.cfg.udpLimits(), bind: s.cfg.Relay.ViewerBind,
		stop: make(chan struct{}), socks: map[uint16]*udpSock{}, flows: map[uint32]*udpFlow{},
		byAddr: map[udpKey]*udpFlow{}, sources: map[netip.Addr]*udpSource{}, nextID: rand.Uint32()}
}

// set replaces the forwarder's ports with want (accepted services by port),
// keeping sockets whose service is unchanged. It returns the ports it could not
// bind, with why.
func (f *udpForwarder) set(want map[uint16]proto.Service, policies map[uint16]gateway.Policy) map[uint16]error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil
	}
	for port, sk := range f.socks {
		if svc, ok := want[port]; !ok || !sameService(svc, sk.spec) {
			f.closeSockLocked(port, sk)
		}
	}
	var errs map[uint16]error
	for _, port := range slices.Sorted(maps.Keys(want)) {
		if _, ok := f.socks[port]; ok {
			continue
		}
		pc, err := listenUDP(net.JoinHostPort(f.bind, strconv.Itoa(int(port))))
		if err != nil {
			if errs == nil {
				errs = map[uint16]error{}
			}
			errs[port] = errors.Unwrap(err)
			if errs[port] == nil {
				errs[port] = err
			}
			continue
		}
		quictransport.CheckBuffers(pc) // as large as allowed; smaller still works
		sk := &udpSock{spec: want[port], policy: policies[port], pc: pc, bw: ipv4.NewPacketConn(pc)}
		f.socks[port] = sk
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			f.readLoop(sk)
		}()
		if !f.sweeper {
			f.sweeper = true
			f.wg.Add(1)
			go func() {
				defer f.wg.Done()
				f.sweep()
			}()
		}
	}
	return errs
}

func listenUDP(addr string) (*net.UDPConn, error) {
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return nil, err
	}
	return pc.(*net.UDPConn), nil
}

// closeSockLocked closes a port and forgets its flows.
func (f *udpForwarder) closeSockLocked(port uint16, sk *udpSock) {
	sk.pc.Close()
	delete(f.socks, port)
	for id, fl := range f.flows {
		if fl.sock == sk {
			f.deleteFlowLocked(id, fl)
		}
	}
}

func (f *udpForwarder) deleteFlowLocked(id uint32, fl *udpFlow) {
	delete(f.flows, id)
	delete(f.byAddr, udpKey{fl.sock.spec.Port, fl.addr})
}

// close closes every port and waits for the forwarder's goroutines; idempotent.
func (f *udpForwarder) close() {
	f.mu.Lock()
	if !f.closed {
		f.closed = true
		close(f.stop)
		for port, sk := range f.socks {
			f.closeSockLocked(port, sk)
		}
	}
	f.mu.Unlock()
	f.wg.Wait()
}

// readLoop forwards one port's packets to the agent until its socket closes.
func (f *udpForwarder) readLoop(sk *udpSock) {
	// A batch per system call (recvmmsg where the platform has it), sent to
	// the agent with one more (sendmmsg with bare datagrams). Buffers are
	// larger than any datagram the tunnel carries: a longer packet reads as
	// udpReadBuf bytes and is dropped as too big.
	r := ipv4.NewPacketConn(sk.pc)
	msgs := make([]ipv4.Message, udpReadBatch)
	for i := range msgs {
		msgs[i].Buffers = [][]byte{make([]byte, udpReadBuf)}
	}
	ds := make([]tunnel.Datagram, 0, udpReadBatch)
	srcs := make([]netip.AddrPort, 0, udpReadBatch)
	port := sk.spec.Port
	for {
		n, err := r.ReadBatch(msgs, 0)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // an ICMP error from an earlier send
		}
		now := time.Now().UnixNano()
		ds, srcs = ds[:0], srcs[:0]
		for _, m := range msgs[:n] {
			ua, ok := m.Addr.(*net.UDPAddr)
			if !ok {
				continue
			}
			from := ua.AddrPort()
			from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
			if !sk.policy.Allows(from.Addr()) {
				f.drop(udpDropNotAllowed, from, m.N, "a packet from outside the service's allow rule dropped")
				continue
			}
			if m.N > tunnel.MaxDatagramPayload {
				f.drop(udpDropTooBig, from, m.N, fmt.Sprintf("a UDP packet above %d bytes cannot cross the tunnel and was dropped: set MTU 1280 in the phone's WireGuard config", tunnel.MaxDatagramPayload))
				continue
			}
			fl, why := f.flow(sk, port, from)
			if fl == nil {
				f.drop(why, from, m.N, "")
				continue
			}
			fl.last.Store(now)
			ds = append(ds, tunnel.Datagram{Header: proto.DatagramHeader{Kind: proto.DatagramWireGuard, Flow: fl.id}, Payload: m.Buffers[0][:m.N]})
			srcs = append(srcs, from)
		}
		f.toAgent(ds, srcs)
	}
}

// toAgent sends a batch to the agent, counting what went and what did not.
func (f *udpForwarder) toAgent(ds []tunnel.Datagram, srcs []netip.AddrPort) {
	for len(ds) > 0 {
		k, err := f.ts.SendDatagrams(ds)
		for _, d := range ds[:k] {
			f.ctr.packetsIn.Add(1)
			f.ctr.bytesIn.Add(uint64(len(d.Payload)))
		}
		if err == nil {
			return
		}
		if k >= len(ds) {
			k = len(ds) - 1
		}
		reason, msg := udpDropTunnel, ""
		if errors.Is(err, transport.ErrDatagramTooLarge) {
			reason = udpDropTooBig
			msg = "a UDP packet too large for the tunnel's path was dropped (the path between relay and agent carries less than the phone sends): set MTU 1280 in the phone's WireGuard config"
		}
		f.drop(reason, srcs[k], len(ds[k].Payload), msg)
		ds, srcs = ds[k+1:], srcs[k+1:]
	}
}

// flow returns from's flow on port for one packet, making the flow when the
// limits allow, and charges the packet to the flow's or the source's rate; or
// nil and the drop reason.
func (f *udpForwarder) flow(sk *udpSock, port uint16, from netip.AddrPort) (*udpFlow, string) {
	key := udpKey{port, from}
	f.mu.Lock()
	defer f.mu.Unlock()
	fl := f.byAddr[key]
	if fl != nil && fl.answered.Load() {
		if !fl.lim.Allow() {
			return nil, udpDropRate
		}
		return fl, ""
	}
	if f.closed {
		return nil, udpDropTunnel
	}
	src := f.sources[from.Addr()]
	if src == nil {
		if len(f.sources) >= udpMaxSources {
			return nil, udpDropNewFlowRate
		}
		src = &udpSource{newFlows: rate.NewLimiter(rate.Limit(f.lim.newPerSec), udpNewFlowBurst),
			unanswered: rate.NewLimiter(rate.Limit(f.lim.unansweredPPS), max(1, int(f.lim.unansweredPPS)))}
		f.sources[from.Addr()] = src
	}
	if fl == nil {
		if !src.newFlows.Allow() {
			return nil, udpDropNewFlowRate
		}
		if len(f.flows) >= f.lim.maxFlows {
			return nil, udpDropFlowLimit
		}
		id := f.nextID
		for id == 0 || f.flows[id] != nil {
			id++
		}
		f.nextID = id + 1
		fl = &udpFlow{id: id, sock: sk, addr: from, uaddr: net.UDPAddrFromAddrPort(from)}
		fl.last.Store(time.Now().UnixNano())
		f.flows[id] = fl
		f.byAddr[key] = fl
		f.ctr.flowsTotal.Add(1)
	}
	if !src.unanswered.Allow() {
		return nil, udpDropRate
	}
	return fl, ""
}

// fromAgent sends one datagram from the agent to its flow's address.
func (f *udpForwarder) fromAgent(h proto.DatagramHeader, payload []byte) {
	f.mu.Lock()
	fl := f.flows[h.Flow]
	f.mu.Unlock()
	if fl == nil {
		// A flow that expired or a port that closed: normal for a moment.
		f.drop(udpDropUnknownFlow, netip.AddrPort{}, len(payload), "")
		return
	}
	if !fl.answered.Load() {
		f.fromAgentAnswered(fl)
	}
	fl.last.Store(time.Now().UnixNano())
	o := &f.out
	i := len(o.pkts)
	if o.store == nil {
		o.store = make([]byte, udpReadBatch*udpReadBuf)
	}
	o.pkts = append(o.pkts, udpOutPkt{fl: fl, n: copy(o.store[i*udpReadBuf:(i+1)*udpReadBuf], payload)})
	if len(o.pkts) == udpReadBatch {
		f.flushOut()
	}
}

// flushOut sends the agent's burst to the phones: one system call per run of
// packets for the same UDP port (sendmmsg), each to its own phone.
func (f *udpForwarder) flushOut() {
	o := &f.out
	for start := 0; start < len(o.pkts); {
		sk := o.pkts[start].fl.sock
		end := start + 1
		for end < len(o.pkts) && o.pkts[end].fl.sock == sk {
			end++
		}
		o.msgs = o.msgs[:0]
		for i := start; i < end; i++ {
			p := o.pkts[i]
			o.msgs = append(o.msgs, ipv4.Message{Buffers: [][]byte{o.store[i*udpReadBuf : i*udpReadBuf+p.n]}, Addr: p.fl.uaddr})
		}
		for sent := 0; sent < len(o.msgs); {
			n, err := sk.bw.WriteBatch(o.msgs[sent:], 0)
			for _, p := range o.pkts[start+sent : start+sent+n] {
				f.ctr.packetsOut.Add(1)
				f.ctr.bytesOut.Add(uint64(p.n))
			}
			sent += n
			if (err != nil || n == 0) && sent < len(o.msgs) {
				// This packet failed (the phone's address unreachable, the
				// socket closed): drop it and go on with the next.
				p := o.pkts[start+sent]
				f.drop(udpDropTunnel, p.fl.addr, p.n, "")
				sent++
			}
		}
		start = end
	}
	clear(o.msgs[:cap(o.msgs)])
	clear(o.pkts)
	o.pkts = o.pkts[:0]
}

// fromAgentAnswered gives fl, which the agent answered, its own rate.
func (f *udpForwarder) fromAgentAnswered(fl *udpFlow) {
	f.mu.Lock() // flow reads lim under mu once answered is set
	defer f.mu.Unlock()
	if fl.lim == nil {
		fl.lim = rate.NewLimiter(rate.Limit(f.lim.answeredPPS), max(1, int(f.lim.answeredPPS/10)))
		fl.answered.Store(true)
	}
}

// sweep expires idle flows and idle source limiters until the forwarder closes.
func (f *udpForwarder) sweep() {
	every := min(max(f.lim.idle/4, udpMinSweep), udpMaxSweep)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-f.stop:
			return
		case now := <-t.C:
			cutoff := now.Add(-f.lim.idle).UnixNano()
			f.mu.Lock()
			for id, fl := range f.flows {
				if fl.last.Load() < cutoff {
					f.deleteFlowLocked(id, fl)
				}
			}
			for a, src := range f.sources {
				if src.newFlows.Tokens() >= udpNewFlowBurst && src.unanswered.Tokens() >= float64(src.unanswered.Burst()) {
					delete(f.sources, a)
				}
			}
			f.mu.Unlock()
		}
	}
}

// drop counts a dropped packet and, when msg is set, logs it at most once a
// minute per reason with the count since.
func (f *udpForwarder) drop(reason string, from netip.AddrPort, size int, msg string) {
	i := slices.Index(udpDropReasons[:], reason)
	f.ctr.dropped[i].Add(1)
	if msg == "" {
		return
	}
	now := time.Now().UnixNano()
	last := f.logged[i].Load()
	if last != 0 && now-last < int64(udpLogEvery) || !f.logged[i].CompareAndSwap(last, now) {
		return
	}
	f.log.Warn(msg, "reason", reason, "from", from.String(), "bytes", size, "dropped_total", f.ctr.dropped[i].Load())
}

// status reports the forwarder's counters.
func (f *udpForwarder) status() *UDPStatus {
	st := &UDPStatus{FlowsTotal: f.ctr.flowsTotal.Load(),
		PacketsIn: f.ctr.packetsIn.Load(), PacketsOut: f.ctr.packetsOut.Load(),
		BytesIn: f.ctr.bytesIn.Load(), BytesOut: f.ctr.bytesOut.Load()}
	var ds tunnel.DatagramStats
	if f.ts != nil {
		ds = f.ts.DatagramStats()
	}
	for i, r := range udpDropReasons {
		n := f.ctr.dropped[i].Load()
		switch r {
		case udpDropAgentBudget:
			n = ds.Dropped
		case udpDropAgentQueue:
			n = ds.QueueDropped
		}
		if n > 0 {
			if st.Dropped == nil {
				st.Dropped = map[string]uint64{}
			}
			st.Dropped[r] = n
		}
	}
	f.mu.Lock()
	st.Flows = len(f.flows)
	st.Ports = slices.Sorted(maps.Keys(f.socks))
	f.mu.Unlock()
	return st
}

// portsString formats ports for the status page.
func portsString(ports []uint16) string {
	s := ""
	for i, p := range ports {
		if i > 0 {
			s += ","
		}
		s += strconv.Itoa(int(p))
	}
	return s
}

// onDatagram hands an agent's datagram to its session's forwarder.
func (s *Server) onDatagram(ts *tunnel.ServerSession, h proto.DatagramHeader, payload []byte) {
	if v, ok := s.udp.Load(ts); ok {
		v.(*udpForwarder).fromAgent(h, payload)
	}
}

// onDatagramsFlush sends what onDatagram queued for the session's phones.
func (s *Server) onDatagramsFlush(ts *tunnel.ServerSession) {
	if v, ok := s.udp.Load(ts); ok {
		v.(*udpForwarder).flushOut()
	}
}
