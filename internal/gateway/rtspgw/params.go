package rtspgw

import (
	"bytes"

	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/pion/rtp"
)

// paramsTracker keeps an H.264 or H.265 format's parameter sets (those the
// viewers' SDP carries) up to date with the ones the camera sends in band:
// some cameras leave them out of their SDP or change them (resolution
// switch), and a player joining mid-stream needs them before the next
// keyframe's to decode anything. It returns nil for other formats. Packets
// pass unchanged; only single NAL units and aggregation packets are looked
// at (parameter sets are small enough never to be fragmented).
func paramsTracker(f format.Format) func(*rtp.Packet) {
	switch f := f.(type) {
	case *format.H264:
		return func(p *rtp.Packet) {
			var sps, pps []byte
			eachNALU(p.Payload, 1, func(n []byte) byte { return n[0] & 0x1f }, 24, func(typ byte, n []byte) {
				switch typ {
				case 7:
					sps = n
				case 8:
					pps = n
				}
			})
			if sps == nil && pps == nil {
				return
			}
			curSPS, curPPS := f.SafeParams()
			if (sps == nil || bytes.Equal(sps, curSPS)) && (pps == nil || bytes.Equal(pps, curPPS)) {
				return
			}
			f.SafeSetParams(pick(sps, curSPS), pick(pps, curPPS))
		}
	case *format.H265:
		return func(p *rtp.Packet) {
			var vps, sps, pps []byte
			eachNALU(p.Payload, 2, func(n []byte) byte { return (n[0] >> 1) & 0x3f }, 48, func(typ byte, n []byte) {
				switch typ {
				case 32:
					vps = n
				case 33:
					sps = n
				case 34:
					pps = n
				}
			})
			if vps == nil && sps == nil && pps == nil {
				return
			}
			curVPS, curSPS, curPPS := f.SafeParams()
			if (vps == nil || bytes.Equal(vps, curVPS)) && (sps == nil || bytes.Equal(sps, curSPS)) &&
				(pps == nil || bytes.Equal(pps, curPPS)) {
				return
			}
			f.SafeSetParams(pick(vps, curVPS), pick(sps, curSPS), pick(pps, curPPS))
		}
	}
	return nil
}

// eachNALU calls fn for the NAL unit in an RTP payload, or for each one of
// an aggregation packet (STAP-A, H.265 AP: a header of hdrLen bytes, then
// 16-bit sizes and units).
func eachNALU(pl []byte, hdrLen int, typeOf func([]byte) byte, aggregate byte, fn func(byte, []byte)) {
	if len(pl) < hdrLen {
		return
	}
	typ := typeOf(pl)
	if typ != aggregate {
		fn(typ, pl)
		return
	}
	pl = pl[hdrLen:]
	for len(pl) >= 2 {
		size := int(pl[0])<<8 | int(pl[1])
		pl = pl[2:]
		if size < hdrLen || size > len(pl) {
			return
		}
		fn(typeOf(pl[:size]), pl[:size])
		pl = pl[size:]
	}
}

// pick is a copy of n if set (packet buffers are not ours to keep), else cur.
func pick(n, cur []byte) []byte {
	if n == nil {
		return cur
	}
	return bytes.Clone(n)
}
