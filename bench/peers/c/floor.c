/*
 * epoll floor: the least user-space work an epoll server can do per request, as a
 * reference column in scripts/bench.sh's peers group (not a peer: it is never the "best
 * peer"). One thread, one edge-triggered epoll set, raw recvfrom/sendto syscalls, one
 * 64 KiB receive buffer for all connections, no allocation unless a send is partial.
 *
 *   floor echo|http|redis HOST:PORT
 *
 * echo: every byte back. http: one canned 200 response per request, counted by the
 * "\r\n\r\n" that ends each header block (GET requests have no body). redis: "$-1\r\n"
 * for every command of 2 arguments (5 lines: *2, $3, GET, $N, key), counted by lines.
 * The counting state carries across reads, so requests split over segments are answered
 * once whole. Output the kernel does not take waits for EPOLLOUT. Built by
 * scripts/bench.sh (cc -O2); benchmark-only, never run by tests.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

enum proto { ECHO, HTTP, REDIS };

static const char HTTP_REPLY[] =
    "HTTP/1.1 200 OK\r\nContent-Length: 13\r\nContent-Type: text/plain\r\n\r\nHello, World!";
static const char REDIS_REPLY[] = "$-1\r\n";

struct conn {
    unsigned state;  /* http: bytes of "\r\n\r\n" matched; redis: lines seen mod 5 */
    char *pending;   /* output the kernel has not taken yet (NULL: none) */
    size_t len, cap;
};

static struct conn *conns;
static size_t nconns;
static char rbuf[65536];
static char wbuf[65536 * 8];

static ssize_t raw_recv(int fd, void *b, size_t n) {
    return syscall(SYS_recvfrom, (long)fd, (long)b, (long)n, 0L, 0L, 0L);
}

static ssize_t raw_send(int fd, const void *b, size_t n) {
    return syscall(SYS_sendto, (long)fd, (long)b, (long)n, (long)MSG_NOSIGNAL, 0L, 0L);
}

static struct conn *conn_of(int fd) {
    if ((size_t)fd >= nconns) {
        size_t n = nconns ? nconns : 1024;
        while (n <= (size_t)fd) n *= 2;
        conns = realloc(conns, n * sizeof *conns);
        if (!conns) { perror("realloc"); exit(1); }
        memset(conns + nconns, 0, (n - nconns) * sizeof *conns);
        nconns = n;
    }
    return &conns[fd];
}

static void drop(int ep, int fd) {
    struct conn *c = conn_of(fd);
    free(c->pending);
    memset(c, 0, sizeof *c);
    epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
    close(fd);
}

/* Queues what send did not take; 0 on success, -1 to close. */
static int keep(int ep, int fd, struct conn *c, const char *b, size_t n) {
    if (c->len + n > c->cap) {
        size_t cap = (c->len + n) * 2;
        char *p = realloc(c->pending, cap);
        if (!p) return -1;
        c->pending = p;
        c->cap = cap;
    }
    int arm = c->len == 0;
    memcpy(c->pending + c->len, b, n);
    c->len += n;
    if (arm) {
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET, .data.fd = fd};
        if (epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev) < 0) return -1;
    }
    return 0;
}

/* Sends b[0..n) after anything pending; 0 on success, -1 to close. */
static int out(int ep, int fd, struct conn *c, const char *b, size_t n) {
    if (c->len) return keep(ep, fd, c, b, n);
    ssize_t w = raw_send(fd, b, n);
    if (w < 0) {
        if (errno != EAGAIN) return -1;
        w = 0;
    }
    return (size_t)w < n ? keep(ep, fd, c, b + w, n - (size_t)w) : 0;
}

static int flush(int ep, int fd, struct conn *c) {
    while (c->len) {
        ssize_t w = raw_send(fd, c->pending, c->len);
        if (w < 0) return errno == EAGAIN ? 0 : -1;
        memmove(c->pending, c->pending + w, c->len - (size_t)w);
        c->len -= (size_t)w;
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data.fd = fd};
    return epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
}

/* How many whole requests b[0..n) completes, advancing the connection's state. */
static size_t count(enum proto p, struct conn *c, const char *b, size_t n) {
    size_t k = 0;
    if (p == HTTP) {
        static const char END[] = "\r\n\r\n";
        for (size_t i = 0; i < n; i++) {
            if (b[i] == END[c->state]) {
                if (++c->state == 4) { k++; c->state = 0; }
            } else {
                c->state = b[i] == '\r' ? 1 : 0;
            }
        }
    } else {
        for (const char *q = b; (q = memchr(q, '\n', (size_t)(b + n - q))); q++) {
            if (++c->state == 5) { k++; c->state = 0; }
        }
    }
    return k;
}

static int readable(int ep, int fd, enum proto p) {
    struct conn *c = conn_of(fd);
    for (;;) {
        ssize_t r = raw_recv(fd, rbuf, sizeof rbuf);
        if (r == 0) return -1;
        if (r < 0) return errno == EAGAIN ? 0 : -1;
        if (p == ECHO) {
            if (out(ep, fd, c, rbuf, (size_t)r) < 0) return -1;
        } else {
            const char *rep = p == HTTP ? HTTP_REPLY : REDIS_REPLY;
            size_t len = p == HTTP ? sizeof HTTP_REPLY - 1 : sizeof REDIS_REPLY - 1;
            size_t k = count(p, c, rbuf, (size_t)r);
            while (k) {
                size_t batch = k < sizeof wbuf / len ? k : sizeof wbuf / len;
                for (size_t i = 0; i < batch; i++) memcpy(wbuf + i * len, rep, len);
                if (out(ep, fd, c, wbuf, batch * len) < 0) return -1;
                k -= batch;
            }
        }
        if ((size_t)r < sizeof rbuf) return 0; /* a short read drained the socket */
    }
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: floor echo|http|redis HOST:PORT\n");
        return 2;
    }
    enum proto p = !strcmp(argv[1], "http") ? HTTP : !strcmp(argv[1], "redis") ? REDIS : ECHO;
    if (p == ECHO && strcmp(argv[1], "echo")) {
        fprintf(stderr, "floor: unknown protocol %s\n", argv[1]);
        return 2;
    }
    char host[64];
    char *colon = strrchr(argv[2], ':');
    if (!colon || (size_t)(colon - argv[2]) >= sizeof host) {
        fprintf(stderr, "floor: bad address %s\n", argv[2]);
        return 2;
    }
    memcpy(host, argv[2], (size_t)(colon - argv[2]));
    host[colon - argv[2]] = 0;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(colon + 1))};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        fprintf(stderr, "floor: bad IPv4 address %s\n", host);
        return 2;
    }
    int one = 1;
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (ls < 0 || bind(ls, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(ls, 4096) < 0) {
        perror("floor: listen");
        return 1;
    }
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event lev = {.events = EPOLLIN, .data.fd = ls};
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &lev);
    struct epoll_event evs[1024];
    for (;;) {
        int n = epoll_wait(ep, evs, 1024, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            perror("floor: epoll_wait");
            return 1;
        }
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == ls) {
                int cfd;
                while ((cfd = accept4(ls, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
                    setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    conn_of(cfd);
                    struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data.fd = cfd};
                    epoll_ctl(ep, EPOLL_CTL_ADD, cfd, &ev);
                }
                continue;
            }
            struct conn *c = conn_of(fd);
            int bad = (evs[i].events & EPOLLOUT) && flush(ep, fd, c) < 0;
            if (!bad && (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
                bad = readable(ep, fd, p) < 0;
            if (bad) drop(ep, fd);
        }
    }
}
