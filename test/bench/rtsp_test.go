package bench

import (
	"context"
	"testing"
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
