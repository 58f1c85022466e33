package main

// The stream test protocol (see ../README.md).
//
// Opener -> handler: 9-byte header = mode byte ('E' echo, 'S' sink) + uint64 big-endian L,
// then L payload bytes, payload[i] = byte((7*i + seed) & 0xff) with seed = L mod 251.
// Echo: the handler writes every payload byte back as it reads it, then Close()s after L bytes.
// Sink: the handler reads and verifies L bytes, writes an 8-byte big-endian count of verified
// bytes (0xFFFFFFFFFFFFFFFF on mismatch), then Close()s.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"
)

const (
	modeEcho byte = 'E'
	modeSink byte = 'S'

	headerLen = 9
	chunkSize = 64 * 1024

	mismatchCount = ^uint64(0)
)

// eofWait bounds how long an opener waits for the handler's FIN after the response.
var eofWait = 30 * time.Second

// testStream is what both smux streams and TCP connections provide.
type testStream interface {
	io.ReadWriteCloser
	SetReadDeadline(t time.Time) error
}

func seedFor(length uint64) byte { return byte(length % 251) }

// patternBuf returns a buffer of chunkSize+256 bytes where buf[j] = byte(7*j + seed).
// The pattern has period 256 (7*256 = 0 mod 256), so payload[i .. i+n) equals
// buf[i%256 : i%256+n] for any n <= chunkSize.
func patternBuf(seed byte) []byte {
	b := make([]byte, chunkSize+256)
	for j := range b {
		b[j] = byte(j*7) + seed
	}
	return b
}

// verifier checks received payload bytes against the pattern on the fly.
type verifier struct {
	pat    []byte
	offset uint64 // number of payload bytes checked so far
	bad    bool
	badAt  uint64
}

func newVerifier(length uint64) *verifier {
	return &verifier{pat: patternBuf(seedFor(length))}
}

// check verifies p as the next bytes of the payload; returns false on the first mismatch.
func (v *verifier) check(p []byte) bool {
	for len(p) > 0 {
		n := len(p)
		if n > chunkSize {
			n = chunkSize
		}
		start := int(v.offset % 256)
		if !bytes.Equal(p[:n], v.pat[start:start+n]) {
			if !v.bad {
				v.bad = true
				for k := 0; k < n; k++ {
					if p[k] != v.pat[start+k] {
						v.badAt = v.offset + uint64(k)
						break
					}
				}
			}
			v.offset += uint64(n)
			return false
		}
		v.offset += uint64(n)
		p = p[n:]
	}
	return !v.bad
}

func (v *verifier) mismatchError() error {
	return fmt.Errorf("payload mismatch at byte %d", v.badAt)
}

// writePayload writes L pattern bytes in chunks of 64 KiB.
func writePayload(w io.Writer, length uint64) error {
	pat := patternBuf(seedFor(length))
	var off uint64
	for off < length {
		n := uint64(chunkSize)
		if length-off < n {
			n = length - off
		}
		// off is always a multiple of chunkSize (a multiple of 256) here
		if _, err := w.Write(pat[:n]); err != nil {
			return fmt.Errorf("write payload at byte %d of %d: %w", off, length, err)
		}
		off += n
	}
	return nil
}

// readVerify reads exactly L bytes from r and verifies them against the pattern.
func readVerify(r io.Reader, length uint64, what string) error {
	v := newVerifier(length)
	buf := make([]byte, chunkSize)
	var got uint64
	for got < length {
		want := uint64(len(buf))
		if length-got < want {
			want = length - got
		}
		n, err := r.Read(buf[:want])
		if n > 0 {
			got += uint64(n)
			if !v.check(buf[:n]) {
				return v.mismatchError()
			}
		}
		if err != nil {
			if got == length {
				break
			}
			if errors.Is(err, io.EOF) {
				return fmt.Errorf("%s: stream ended after %d of %d bytes", what, got, length)
			}
			return fmt.Errorf("%s: read after %d of %d bytes: %w", what, got, length, err)
		}
	}
	return nil
}

// expectEOF checks that the peer closes its side (FIN) and sends nothing more.
func expectEOF(s testStream) error {
	_ = s.SetReadDeadline(time.Now().Add(eofWait))
	defer s.SetReadDeadline(time.Time{})
	var one [1]byte
	for {
		n, err := s.Read(one[:])
		if n > 0 {
			return fmt.Errorf("unexpected extra bytes after the response (expected FIN)")
		}
		if err == nil {
			continue
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		return fmt.Errorf("expected FIN after the response, got: %v", err)
	}
}

// runOpener plays the opener role on s with L payload bytes; it always closes s.
func runOpener(s testStream, mode byte, length uint64) (err error) {
	// Close errors are ignored: in smux 1.5.16 Close() reports io.ErrClosedPipe when the
	// session is torn down concurrently even though the FIN was handed to the transport.
	defer s.Close()
	var hdr [headerLen]byte
	hdr[0] = mode
	binary.BigEndian.PutUint64(hdr[1:], length)
	if _, err := s.Write(hdr[:]); err != nil {
		return fmt.Errorf("write header: %w", err)
	}
	switch mode {
	case modeEcho:
		werr := make(chan error, 1)
		go func() { werr <- writePayload(s, length) }()
		if err := readVerify(s, length, "echo"); err != nil {
			return err
		}
		if err := <-werr; err != nil {
			return err
		}
		return expectEOF(s)
	case modeSink:
		if err := writePayload(s, length); err != nil {
			return err
		}
		var cnt [8]byte
		if _, err := io.ReadFull(s, cnt[:]); err != nil {
			return fmt.Errorf("sink: read count: %w", err)
		}
		c := binary.BigEndian.Uint64(cnt[:])
		if c == mismatchCount {
			return fmt.Errorf("sink: handler reported a payload mismatch")
		}
		if c != length {
			return fmt.Errorf("sink: handler counted %d bytes, sent %d", c, length)
		}
		return expectEOF(s)
	default:
		return fmt.Errorf("unknown mode %q", mode)
	}
}

// handlerResult describes one handled stream.
type handlerResult struct {
	mode   byte
	length uint64
	err    error
}

// runHandler plays the handler role on s; it always closes s.
func runHandler(s testStream) (res handlerResult) {
	defer s.Close() // errors ignored, see runOpener
	var hdr [headerLen]byte
	if _, err := io.ReadFull(s, hdr[:]); err != nil {
		res.err = fmt.Errorf("read header: %w", err)
		return
	}
	res.mode = hdr[0]
	res.length = binary.BigEndian.Uint64(hdr[1:])
	length := res.length
	if res.mode != modeEcho && res.mode != modeSink {
		res.err = fmt.Errorf("bad mode byte 0x%02x in header", res.mode)
		return
	}
	v := newVerifier(length)
	buf := make([]byte, chunkSize)
	var got uint64
	for got < length {
		want := uint64(len(buf))
		if length-got < want {
			want = length - got
		}
		n, err := s.Read(buf[:want])
		if n > 0 {
			got += uint64(n)
			v.check(buf[:n]) // a mismatch is remembered; keep going
			if res.mode == modeEcho {
				if _, werr := s.Write(buf[:n]); werr != nil {
					res.err = fmt.Errorf("echo write after %d of %d bytes: %w", got, length, werr)
					return
				}
			}
		}
		if err != nil && got < length {
			if errors.Is(err, io.EOF) {
				res.err = fmt.Errorf("peer ended the stream after %d of %d payload bytes", got, length)
			} else {
				res.err = fmt.Errorf("read after %d of %d payload bytes: %w", got, length, err)
			}
			return
		}
	}
	if res.mode == modeSink {
		var cnt [8]byte
		c := got
		if v.bad {
			c = mismatchCount
		}
		binary.BigEndian.PutUint64(cnt[:], c)
		if _, err := s.Write(cnt[:]); err != nil {
			res.err = fmt.Errorf("sink: write count: %w", err)
			return
		}
	}
	if v.bad {
		res.err = v.mismatchError()
	}
	return
}
