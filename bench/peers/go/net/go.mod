module evloop.bench/peers/net

go 1.19

require evloop.bench/peers/proto v0.0.0

replace evloop.bench/peers/proto => ../proto
