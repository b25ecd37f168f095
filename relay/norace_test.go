//go:build !race

package relay_test

// What an idle agent with one service may cost the relay (TestIdleAgentMemory).
// Measured after issue #7: 60-67 KiB of heap in use (nearly all quic-go
// connection and TLS state) and 22-28 KiB of stacks; 4 goroutines: quic-go's
// Conn.run and sendQueue.Run, the session's control-stream reader, and the
// service listener's accept loop.
const (
	maxKiBPerAgent        = 110
	maxGoroutinesPerAgent = 4
)
