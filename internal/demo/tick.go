package demo

import "time"

func retryTick() <-chan time.Time { return time.After(50 * time.Millisecond) }
