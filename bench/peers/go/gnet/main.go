// Command gnet is the gnet v2 peer for scripts/bench.sh: `gnet echo|http|redis
// 127.0.0.1:PORT` serves one protocol on one gnet event loop (WithMulticore(false)),
// GOMAXPROCS=1.
package main

import (
	"fmt"
	"os"
	"runtime"

	"evloop.bench/peers/proto"
	"github.com/panjf2000/gnet/v2"
)

type server struct {
	gnet.BuiltinEventEngine
	kind  string
	store proto.Store
	out   []byte
}

func (s *server) OnTraffic(c gnet.Conn) gnet.Action {
	if s.kind == "echo" {
		in, _ := c.Next(-1)
		if _, err := c.Write(in); err != nil {
			return gnet.Close
		}
		return gnet.None
	}
	in, _ := c.Peek(-1)
	var used int
	var err error
	if s.kind == "http" {
		s.out, used, err = proto.HTTP(in, s.out[:0], "gnet")
	} else {
		s.out, used, err = proto.RESP(in, s.out[:0], s.store)
	}
	if err != nil {
		return gnet.Close
	}
	if _, err := c.Discard(used); err != nil {
		return gnet.Close
	}
	if len(s.out) > 0 {
		if _, err := c.Write(s.out); err != nil {
			return gnet.Close
		}
	}
	return gnet.None
}

func main() {
	if len(os.Args) != 3 || (os.Args[1] != "echo" && os.Args[1] != "http" && os.Args[1] != "redis") {
		fmt.Fprintln(os.Stderr, "usage: gnet echo|http|redis 127.0.0.1:PORT")
		os.Exit(2)
	}
	runtime.GOMAXPROCS(1)
	s := &server{kind: os.Args[1], store: proto.Store{}}
	if err := gnet.Run(s, "tcp://"+os.Args[2], gnet.WithMulticore(false), gnet.WithNumEventLoop(1)); err != nil {
		fmt.Fprintln(os.Stderr, "gnet:", err)
		os.Exit(1)
	}
}
