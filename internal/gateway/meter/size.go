package meter

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// sizeUnits are the units ParseSize accepts: decimal (as phone plans count)
// and binary.
var sizeUnits = map[string]float64{
	"": 1, "b": 1,
	"kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
	"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
}

// ParseSize reads an amount of data: a number and an optional unit, B, KB,
// MB, GB, TB (powers of 1000, as phone plans count) or KiB, MiB, GiB, TiB
// (powers of 1024), in any case, with or without a space: "500MB", "1.5 GB",
// "750MiB", "1048576". It must be above 0.
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := strings.IndexFunc(t, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	if i < 0 {
		i = len(t)
	}
	num, unit := t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	mult, ok := sizeUnits[unit]
	if !ok {
		return 0, fmt.Errorf("unknown unit %q in %q: use B, KB, MB, GB, TB (or KiB, MiB, GiB, TiB)", strings.TrimSpace(t[i:]), s)
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || num == "" {
		return 0, fmt.Errorf("%q is not an amount of data like 500MB or 2GB", s)
	}
	b := v * mult
	if b < 1 || b > math.MaxInt64/2 || math.IsNaN(b) {
		return 0, fmt.Errorf("%q is out of range: give at least 1 byte and at most a few petabytes", s)
	}
	return int64(b), nil
}

// FormatBytes writes n bytes for people, in the decimal units phone plans use.
func FormatBytes(n int64) string {
	switch {
	case n >= 1e9:
		return strconv.FormatFloat(float64(n)/1e9, 'f', 2, 64) + " GB"
	case n >= 1e6:
		return strconv.FormatFloat(float64(n)/1e6, 'f', 1, 64) + " MB"
	case n >= 1e3:
		return strconv.FormatFloat(float64(n)/1e3, 'f', 0, 64) + " kB"
	}
	return strconv.FormatInt(n, 10) + " B"
}
