package proto

import (
	"bytes"
	"testing"
)

func TestHTTPPipelined(t *testing.T) {
	in := []byte("GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\nGET /")
	out, used, err := HTTP(in, nil, "p")
	if err != nil || used != 54 || bytes.Count(out, body) != 2 {
		t.Fatalf("used %d err %v out %q", used, err, out)
	}
}

func TestRESP(t *testing.T) {
	in := []byte("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\nvv\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\nPING\r\n*2\r\n$3\r\nGET")
	out, used, err := RESP(in, nil, Store{})
	if err != nil || used != len(in)-11 || string(out) != "+OK\r\n$2\r\nvv\r\n+PONG\r\n" {
		t.Fatalf("used %d err %v out %q", used, err, out)
	}
}
