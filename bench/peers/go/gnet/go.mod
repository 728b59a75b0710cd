module evloop.bench/peers/gnet

go 1.19

require (
	evloop.bench/peers/proto v0.0.0
	github.com/panjf2000/gnet/v2 v2.9.7
)

replace evloop.bench/peers/proto => ../proto
