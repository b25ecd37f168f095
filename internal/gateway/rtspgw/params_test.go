package rtspgw

import (
	"bytes"
	"testing"

	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/pion/rtp"
)

func TestParamsTrackerH265(t *testing.T) {
	f := &format.H265{PayloadTyp: 96}
	track := paramsTracker(f)
	vps := []byte{32 << 1, 1, 0xaa}
	sps := []byte{33 << 1, 1, 0xbb, 0xbc}
	pps := []byte{34 << 1, 1, 0xcc}
	// An aggregation packet (type 48) of VPS and SPS, then a single PPS.
	ap := []byte{48 << 1, 1, 0, byte(len(vps))}
	ap = append(ap, vps...)
	ap = append(ap, 0, byte(len(sps)))
	ap = append(ap, sps...)
	track(&rtp.Packet{Payload: ap})
	track(&rtp.Packet{Payload: pps})
	gotVPS, gotSPS, gotPPS := f.SafeParams()
	if !bytes.Equal(gotVPS, vps) || !bytes.Equal(gotSPS, sps) || !bytes.Equal(gotPPS, pps) {
		t.Errorf("params %x %x %x", gotVPS, gotSPS, gotPPS)
	}
	// Packet buffers are reused by the client: the format keeps copies.
	pps[2] = 0
	if _, _, p := f.SafeParams(); p[2] != 0xcc {
		t.Error("the format keeps the packet's buffer")
	}
}

func TestParamsTrackerMalformed(t *testing.T) {
	h264 := paramsTracker(&format.H264{PayloadTyp: 96, PacketizationMode: 1})
	h265 := paramsTracker(&format.H265{PayloadTyp: 96})
	for _, pl := range [][]byte{
		nil, {}, {24}, {24, 0}, {24, 0, 9, 7}, {24, 0xff, 0xff, 7, 1}, {24, 0, 0, 0, 1, 7},
		{48 << 1}, {48 << 1, 1, 0, 1, 66}, {48 << 1, 1, 0, 5, 66, 1}, {48 << 1, 1, 0xff},
	} {
		h264(&rtp.Packet{Payload: pl})
		h265(&rtp.Packet{Payload: pl})
	}
	if paramsTracker(&format.MJPEG{}) != nil {
		t.Error("a tracker for MJPEG")
	}
}

func FuzzParamsTracker(f *testing.F) {
	f.Add([]byte{24, 0, 2, 7, 1, 0, 1, 8})
	f.Add([]byte{48 << 1, 1, 0, 2, 66, 1})
	f.Fuzz(func(t *testing.T, pl []byte) {
		paramsTracker(&format.H264{PayloadTyp: 96, PacketizationMode: 1})(&rtp.Packet{Payload: pl})
		paramsTracker(&format.H265{PayloadTyp: 96})(&rtp.Packet{Payload: pl})
	})
}
