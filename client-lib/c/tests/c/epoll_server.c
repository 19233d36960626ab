/* An edge-triggered epoll echo server on a tcpd listener: the listener and
 * every accepted socket are non-blocking real descriptors in one epoll set
 * (EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET), drained until EAGAIN after
 * every event, as such servers are written for kernel sockets. Data moves
 * with plain read(2)/write(2); closing is plain close(2).
 *
 * usage: epoll_server IP PORT CONNECTIONS
 * Prints "listening PORT", serves CONNECTIONS clients (echoing until each
 * sends EOF, then closing), prints "served N" and exits 0. */
#include <fcntl.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "common.h"

#define MAX_CONNS 64
#define BUF_SIZE 65536

struct conn {
    int fd;
    char buf[BUF_SIZE];
    size_t head, tail; /* bytes buf[head..tail) read, not yet written back */
    int eof;
};

static struct conn conns[MAX_CONNS];

static struct conn *conn_of(int fd) {
    for (int i = 0; i < MAX_CONNS; i++)
        if (conns[i].fd == fd) return &conns[i];
    return NULL;
}

/* Moves bytes until read or write would block; returns 1 when finished. */
static int pump(struct conn *c) {
    for (;;) {
        while (c->head < c->tail) {
            ssize_t w = write(c->fd, c->buf + c->head, c->tail - c->head);
            if (w < 0) {
                if (errno == EAGAIN) return 0;
                FAIL("write");
            }
            c->head += (size_t)w;
        }
        c->head = c->tail = 0;
        if (c->eof) return 1;
        ssize_t n = read(c->fd, c->buf, BUF_SIZE);
        if (n < 0) {
            if (errno == EAGAIN) return 0;
            FAIL("read");
        }
        if (n == 0) c->eof = 1;
        c->tail = (size_t)n;
    }
}

int main(int argc, char **argv) {
    if (argc != 4) return 2;
    struct sockaddr_in addr = make_addr(argv[1], atoi(argv[2]));
    int want = atoi(argv[3]);
    int l = tcpd_socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (l < 0) FAIL("tcpd_socket");
    if (!tcpd_is_socket(l) || tcpd_is_socket(STDIN_FILENO)) FAIL("tcpd_is_socket");
    if (tcpd_bind(l, (struct sockaddr *)&addr, sizeof addr) < 0) FAIL("bind");
    if (tcpd_listen(l, 16) < 0) FAIL("listen");
    socklen_t len = sizeof addr;
    if (tcpd_getsockname(l, (struct sockaddr *)&addr, &len) < 0) FAIL("getsockname");
    printf("listening %d\n", ntohs(addr.sin_port));
    fflush(stdout);

    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) FAIL("epoll_create1");
    struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data.fd = l};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, l, &ev) < 0) FAIL("epoll_ctl listener");
    for (int i = 0; i < MAX_CONNS; i++) conns[i].fd = -1;

    int accepted = 0, served = 0, open = 0;
    while (served < want) {
        struct epoll_event events[16];
        int n = epoll_wait(ep, events, 16, 30000);
        if (n < 0) {
            if (errno == EINTR) continue;
            FAIL("epoll_wait");
        }
        if (n == 0) FAIL("no event for 30 s (served %d of %d)", served, want);
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            if (fd == l) {
                /* Edge-triggered: accept until EAGAIN. */
                for (;;) {
                    struct sockaddr_in peer;
                    socklen_t plen = sizeof peer;
                    int c = tcpd_accept4(l, (struct sockaddr *)&peer, &plen, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (c < 0) {
                        if (errno == EAGAIN) break;
                        FAIL("accept4");
                    }
                    if (!(fcntl(c, F_GETFL) & O_NONBLOCK)) FAIL("SOCK_NONBLOCK");
                    if (!(fcntl(c, F_GETFD) & FD_CLOEXEC)) FAIL("SOCK_CLOEXEC");
                    struct conn *slot = conn_of(-1);
                    if (!slot) FAIL("too many connections");
                    slot->fd = c;
                    slot->head = slot->tail = 0;
                    slot->eof = 0;
                    struct epoll_event cev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.fd = c};
                    if (epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev) < 0) FAIL("epoll_ctl conn");
                    accepted++;
                    open++;
                    /* Data may be there already: edge-triggered, so pump now. */
                    if (pump(slot)) {
                        close(c);
                        slot->fd = -1;
                        open--;
                        served++;
                    }
                }
                continue;
            }
            struct conn *c = conn_of(fd);
            if (!c) continue;
            if (pump(c)) {
                if (epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL) < 0) FAIL("epoll_ctl del");
                close(fd); /* plain close(2): the daemon sees the last copy go */
                c->fd = -1;
                open--;
                served++;
            }
        }
    }
    close(l);
    printf("served %d (accepted %d, open %d)\n", served, accepted, open);
    return 0;
}
