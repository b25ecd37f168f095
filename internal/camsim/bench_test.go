package camsim

import (
	"testing"
	"time"
)

func BenchmarkRender(b *testing.B) {
	r := newRenderer(New(Config{}).cfg)
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for i := 0; b.Loop(); i++ {
		r.render(now.Add(time.Duration(i)*100*time.Millisecond), uint64(i))
	}
}

func BenchmarkEncode(b *testing.B) {
	cfg := New(Config{}).cfg
	r := newRenderer(cfg)
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for i := 0; b.Loop(); i++ {
		if _, err := r.encode(now.Add(time.Duration(i)*100*time.Millisecond), uint64(i), cfg.Quality); err != nil {
			b.Fatal(err)
		}
	}
}
