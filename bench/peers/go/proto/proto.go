// Package proto is the Go peers' request handling, independent of any network
// library: it finds whole requests at the front of a connection's input and appends
// their replies to an output buffer.
//
// HTTP/1.1: every request (head, plus a Content-Length body if any) gets 200 OK with
// "Hello, World!", keep-alive, in order (pipelining), with the headers `evloop serve
// --proto http` answers GET / with. RESP: arrays of bulk strings (and inline commands):
// PING -> +PONG, SET k v -> +OK, GET k -> the value or nil, anything else -> -ERR.
package proto

import (
	"bytes"
	"errors"
	"strconv"
	"sync/atomic"
	"time"
)

// ErrMalformed: input that cannot be a request; the connection should be closed.
var ErrMalformed = errors.New("malformed request")

const maxHead = 64 * 1024

var body = []byte("Hello, World!")

type stamp struct {
	sec  int64
	text []byte
}

var date atomic.Pointer[stamp]

func appendDate(out []byte) []byte {
	now := time.Now()
	d := date.Load()
	if d == nil || d.sec != now.Unix() {
		d = &stamp{now.Unix(), []byte(now.UTC().Format("Mon, 02 Jan 2006 15:04:05 GMT"))}
		date.Store(d)
	}
	return append(out, d.text...)
}

// HTTPReply appends one 200 OK reply naming `server`.
func HTTPReply(out []byte, server string) []byte {
	out = append(out, "HTTP/1.1 200 OK\r\nServer: "...)
	out = append(out, server...)
	out = append(out, "\r\nDate: "...)
	out = appendDate(out)
	out = append(out, "\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\n"...)
	return append(out, body...)
}

var crlfcrlf = []byte("\r\n\r\n")
var contentLength = []byte("content-length")

// HTTP answers every whole request at the front of in; it returns the output and the
// bytes consumed.
func HTTP(in, out []byte, server string) ([]byte, int, error) {
	at := 0
	for {
		rest := in[at:]
		end := bytes.Index(rest, crlfcrlf)
		if end < 0 {
			if len(rest) > maxHead {
				return out, at, ErrMalformed
			}
			return out, at, nil
		}
		n := 0
		for _, line := range bytes.Split(rest[:end], []byte("\n"))[1:] {
			colon := bytes.IndexByte(line, ':')
			if colon > 0 && bytes.EqualFold(line[:colon], contentLength) {
				v, err := strconv.Atoi(string(bytes.TrimSpace(line[colon+1:])))
				if err != nil || v < 0 {
					return out, at, ErrMalformed
				}
				n = v
			}
		}
		total := end + 4 + n
		if len(rest) < total {
			return out, at, nil
		}
		out = HTTPReply(out, server)
		at += total
	}
}

// Store is a RESP peer's keyspace (used from one goroutine at a time).
type Store map[string][]byte

// command parses one whole RESP command at the front of in: its arguments and length,
// or used == 0 when it is incomplete.
func command(in []byte) (args [][]byte, used int, err error) {
	line := func(from int) ([]byte, int, error) {
		p := bytes.Index(in[from:], []byte("\r\n"))
		if p < 0 {
			if len(in)-from > maxHead {
				return nil, 0, ErrMalformed
			}
			return nil, 0, nil
		}
		return in[from : from+p], from + p + 2, nil
	}
	first, at, err := line(0)
	if err != nil || at == 0 {
		return nil, 0, err
	}
	if len(first) == 0 || first[0] != '*' {
		return bytes.Fields(first), at, nil // inline: PING
	}
	n, err := strconv.Atoi(string(first[1:]))
	if err != nil {
		return nil, 0, ErrMalformed
	}
	for i := 0; i < n; i++ {
		l, next, err := line(at)
		if err != nil || next == 0 {
			return nil, 0, err
		}
		if len(l) == 0 || l[0] != '$' {
			return nil, 0, ErrMalformed
		}
		size, err := strconv.Atoi(string(l[1:]))
		if err != nil || size < 0 {
			return nil, 0, ErrMalformed
		}
		if len(in) < next+size+2 {
			return nil, 0, nil
		}
		args = append(args, in[next:next+size])
		at = next + size + 2
	}
	return args, at, nil
}

// RESP answers every whole command at the front of in; it returns the output and the
// bytes consumed.
func RESP(in, out []byte, store Store) ([]byte, int, error) {
	at := 0
	for {
		args, used, err := command(in[at:])
		if err != nil {
			return out, at, err
		}
		if used == 0 {
			return out, at, nil
		}
		at += used
		if len(args) == 0 {
			continue
		}
		name := args[0]
		switch {
		case bytes.EqualFold(name, []byte("GET")) && len(args) == 2:
			if v, ok := store[string(args[1])]; ok {
				out = append(out, '$')
				out = strconv.AppendInt(out, int64(len(v)), 10)
				out = append(out, "\r\n"...)
				out = append(out, v...)
				out = append(out, "\r\n"...)
			} else {
				out = append(out, "$-1\r\n"...)
			}
		case bytes.EqualFold(name, []byte("SET")) && len(args) == 3:
			store[string(args[1])] = append([]byte(nil), args[2]...)
			out = append(out, "+OK\r\n"...)
		case bytes.EqualFold(name, []byte("PING")):
			out = append(out, "+PONG\r\n"...)
		default:
			out = append(out, "-ERR unknown command\r\n"...)
		}
	}
}
