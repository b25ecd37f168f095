package bench

import (
	"context"
	"encoding/binary"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/pion/rtp"
)

func BenchmarkRTSPViewers(b *testing.B) {
	bs := mustBins(b)
	for range b.N {
		check(b, RTSPViewers(context.Background(), bs, Smoke.RTSP)...)
	}
}

func BenchmarkRTSPSlow(b *testing.B) {
	bs := mustBins(b)
	for range b.N {
		check(b, RTSPSlow(context.Background(), bs, Smoke.RTSP)...)
	}
}

func BenchmarkDataCost(b *testing.B) {
	bs := mustBins(b)
	for range b.N {
		check(b, DataCost(context.Background(), bs, Smoke.RTSP)...)
	}
}

// TestViewerCountsCompleteFrames: the camera's frames, packetized as it sends
// them, are counted with their number and delay; a frame missing a packet is
// not.
func TestViewerCountsCompleteFrames(t *testing.T) {
	forma := &format.H264{PayloadTyp: 96, PacketizationMode: 1, SPS: benchSPS, PPS: benchPPS}
	enc, err := forma.CreateEncoder()
	if err != nil {
		t.Fatal(err)
	}
	epoch := time.Now()
	frame := func(n uint32, size int, sent time.Duration) []*rtp.Packet {
		nalu := make([]byte, size)
		nalu[0] = 0x41
		binary.BigEndian.PutUint32(nalu[1:], n)
		binary.BigEndian.PutUint64(nalu[5:], uint64(sent))
		pkts, err := enc.Encode([][]byte{nalu})
		if err != nil {
			t.Fatal(err)
		}
		return pkts
	}
	v := &rtspViewer{epoch: epoch, delays: map[uint32]time.Duration{}}
	for n := range uint32(3) {
		pkts := frame(n, 20000, time.Since(epoch))
		if len(pkts) < 3 {
			t.Fatalf("frame of %d packets: want a fragmented one", len(pkts))
		}
		for i, p := range pkts {
			if n == 1 && i == 1 {
				continue // lost
			}
			v.packet(p)
		}
	}
	all, key := v.window(0, 3, 25)
	if len(all) != 2 || len(key) != 1 {
		t.Fatalf("%d frames (%d keyframes by number), want 2 (1): frame 1 lacked a packet", len(all), len(key))
	}
	if _, ok := v.delays[1]; ok {
		t.Error("frame 1 counted without its second packet")
	}
	for _, d := range all {
		if d < 0 || d > time.Minute {
			t.Errorf("delay %v", d)
		}
	}
	if !v.reached(2) || v.reached(3) {
		t.Errorf("reached: last %d, want 2", v.last)
	}
}
