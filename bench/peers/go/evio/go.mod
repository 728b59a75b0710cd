module evloop.bench/peers/evio

go 1.19

require (
	evloop.bench/peers/proto v0.0.0
	github.com/tidwall/evio v1.0.8
)

replace evloop.bench/peers/proto => ../proto
