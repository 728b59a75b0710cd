// Command evio is the evio peer for scripts/bench.sh: `evio echo|http|redis
// 127.0.0.1:PORT` serves one protocol on one evio loop (NumLoops 1), GOMAXPROCS=1.
package main

import (
	"fmt"
	"os"
	"runtime"

	"evloop.bench/peers/proto"
	"github.com/tidwall/evio"
)

func main() {
	if len(os.Args) != 3 || (os.Args[1] != "echo" && os.Args[1] != "http" && os.Args[1] != "redis") {
		fmt.Fprintln(os.Stderr, "usage: evio echo|http|redis 127.0.0.1:PORT")
		os.Exit(2)
	}
	runtime.GOMAXPROCS(1)
	kind, store := os.Args[1], proto.Store{}
	var buf []byte // replies; evio copies what Data returns before the next call
	var events evio.Events
	events.NumLoops = 1
	events.Opened = func(c evio.Conn) (out []byte, opts evio.Options, action evio.Action) {
		c.SetContext(&evio.InputStream{})
		return
	}
	events.Data = func(c evio.Conn, in []byte) (out []byte, action evio.Action) {
		if in == nil {
			return
		}
		if kind == "echo" {
			return in, evio.None
		}
		is := c.Context().(*evio.InputStream)
		data := is.Begin(in)
		var used int
		var err error
		if kind == "http" {
			buf, used, err = proto.HTTP(data, buf[:0], "evio")
		} else {
			buf, used, err = proto.RESP(data, buf[:0], store)
		}
		if err != nil {
			return nil, evio.Close
		}
		is.End(data[used:])
		return buf, evio.None
	}
	if err := evio.Serve(events, "tcp://"+os.Args[2]); err != nil {
		fmt.Fprintln(os.Stderr, "evio:", err)
		os.Exit(1)
	}
}
