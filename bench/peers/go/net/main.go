// Command net is the plain-Go peer for scripts/bench.sh: `net echo|http|redis
// 127.0.0.1:PORT` serves one protocol with the standard library, one goroutine per
// connection, GOMAXPROCS=1 (one thread running Go code at a time).
package main

import (
	"fmt"
	"net"
	"os"
	"runtime"
	"sync"
	"time"

	"evloop.bench/peers/proto"
)

const readSize = 4096

func serve(c net.Conn, kind string, store proto.Store, mu *sync.Mutex) {
	defer c.Close()
	in := make([]byte, 0, readSize)
	var out []byte
	for {
		if cap(in)-len(in) < readSize/4 {
			grown := make([]byte, len(in), 2*cap(in))
			copy(grown, in)
			in = grown
		}
		n, err := c.Read(in[len(in):cap(in)])
		if n == 0 || err != nil {
			return
		}
		in = in[:len(in)+n]
		if kind == "echo" {
			if _, err := c.Write(in); err != nil {
				return
			}
			in = in[:0]
			continue
		}
		var used int
		if kind == "http" {
			out, used, err = proto.HTTP(in, out[:0], "go-net")
		} else {
			mu.Lock()
			out, used, err = proto.RESP(in, out[:0], store)
			mu.Unlock()
		}
		if err != nil {
			return
		}
		in = in[:copy(in, in[used:])]
		if len(out) > 0 {
			if _, err := c.Write(out); err != nil {
				return
			}
		}
	}
}

func main() {
	if len(os.Args) != 3 || (os.Args[1] != "echo" && os.Args[1] != "http" && os.Args[1] != "redis") {
		fmt.Fprintln(os.Stderr, "usage: net echo|http|redis 127.0.0.1:PORT")
		os.Exit(2)
	}
	runtime.GOMAXPROCS(1)
	kind := os.Args[1]
	ln, err := net.Listen("tcp", os.Args[2])
	if err != nil {
		fmt.Fprintln(os.Stderr, "net:", err)
		os.Exit(1)
	}
	store, mu := proto.Store{}, &sync.Mutex{}
	for {
		c, err := ln.Accept()
		if err != nil {
			// Out of descriptors and the like: say so, keep serving the others.
			fmt.Fprintln(os.Stderr, "net: accept:", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		go serve(c, kind, store, mu)
	}
}
