module evloop.bench/peers/proto

go 1.19
