package httpgw

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
)

func TestPartReader(t *testing.T) {
	a, b := "AAAA\r\n--notquite\r\nAA", "BB\nB"
	for _, tc := range []struct {
		name, boundary, body string
		want                 []string
		end                  error
	}{
		{"content-length", "fr",
			"--fr\r\nContent-Type: image/jpeg\r\nContent-Length: 20\r\n\r\n" + a + "\r\n--fr\r\nContent-length:4\r\n\r\n" + b + "\r\n--fr\r\n",
			[]string{a, b}, io.ErrUnexpectedEOF},
		{"scan", "fr",
			"preamble\r\n--fr\r\nContent-Type: image/jpeg\r\n\r\n" + a + "\r\n--fr\r\n\r\n" + b + "\r\n--fr--\r\n",
			[]string{a, b}, errStreamEnded},
		{"lf only, padding", "fr",
			"--fr  \n\n" + a + "\n--fr\nX: y\n\n" + b + "\n--fr\n",
			[]string{a, b}, io.ErrUnexpectedEOF},
		{"boundary with dashes", "--myboundary",
			"--myboundary\r\nContent-Length: 4\r\n\r\nBB\nB\r\n--myboundary\r\n\r\n" + a + "\r\n--myboundary\r\n",
			[]string{b, a}, io.ErrUnexpectedEOF},
		{"closing after length", "fr",
			"--fr\r\nContent-Length: 4\r\n\r\nBB\nB\r\n--fr--\r\n",
			[]string{b}, errStreamEnded},
		{"bad length", "fr", "--fr\r\nContent-Length: -3\r\n\r\n", nil, errBadLength},
		{"too big by length", "fr", "--fr\r\nContent-Length: 101\r\n\r\n", nil, errFrameTooBig},
		{"too big by scan", "fr", "--fr\r\n\r\n" + strings.Repeat("x\n", 60), nil, errFrameTooBig},
		{"no boundary", "fr", strings.Repeat("junk\n", 30), nil, errNoBoundary},
		{"huge header", "fr", "--fr\r\n" + strings.Repeat("X: y\r\n", 2000), nil, errPartHeader},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPartReader(strings.NewReader(tc.body), tc.boundary, 100)
			var got []string
			for {
				b, err := p.next()
				if err != nil {
					if !errors.Is(err, tc.end) {
						t.Errorf("ended with %v, want %v", err, tc.end)
					}
					break
				}
				got = append(got, string(b))
			}
			if fmt.Sprintf("%q", got) != fmt.Sprintf("%q", tc.want) {
				t.Errorf("parts %q, want %q", got, tc.want)
			}
		})
	}
}

// A frame longer than the bufio buffer, without Content-Length, with line
// breaks and boundary look-alikes inside.
func TestPartReaderLongScan(t *testing.T) {
	var frame bytes.Buffer
	for i := range 20000 {
		fmt.Fprintf(&frame, "%d\r\n--f", i)
	}
	body := "--fr\r\n\r\n" + frame.String() + "\r\n--fr\r\n\r\nend\r\n--fr--"
	p := newPartReader(strings.NewReader(body), "fr", maxFrame)
	b, err := p.next()
	if err != nil || !bytes.Equal(b, frame.Bytes()) {
		t.Fatalf("got %d bytes, %v; want %d", len(b), err, frame.Len())
	}
	if b, err := p.next(); err != nil || string(b) != "end" {
		t.Fatalf("second part %q, %v", b, err)
	}
}

func FuzzPartReader(f *testing.F) {
	f.Add("fr", "--fr\r\nContent-Length: 4\r\n\r\nabcd\r\n--fr\r\n\r\nxy\r\n--fr--")
	f.Add("--b", "--b\n\nab\n--b\nContent-Length: 1\n\nz\n--b--\n")
	f.Fuzz(func(t *testing.T, boundary, body string) {
		if boundary == "" {
			return
		}
		p := newPartReader(strings.NewReader(body), boundary, 1<<10)
		total := 0
		for range 1000 {
			b, err := p.next()
			if err != nil {
				return
			}
			if len(b) > 1<<10 {
				t.Fatalf("part of %d bytes past the limit", len(b))
			}
			total += len(b)
		}
		if total > len(body) {
			t.Fatalf("%d bytes of parts from a %d byte body", total, len(body))
		}
	})
}
