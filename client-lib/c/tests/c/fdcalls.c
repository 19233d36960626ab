/* The kernel's own calls on tcpd descriptors, against kernel peers:
 * select(2) client, readv/writev, sendmsg/recvmsg, ioctl(FIONREAD),
 * non-blocking connect completed through epoll (and a refused one), and
 * close(2) without tcpd_close.
 *
 * usage: fdcalls IP ECHO_PORT CLOSED_PORT
 * First opens a connection, closes it with close(2) and prints "closed",
 * then waits for a line on stdin (the test checks meanwhile that the
 * daemon released the socket while this process and its session live). */
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/select.h>
#include <sys/uio.h>
#include <unistd.h>

#include "common.h"

static int connected(struct sockaddr_in *to) {
    int s = tcpd_socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0 || tcpd_connect(s, (struct sockaddr *)to, sizeof *to) < 0) FAIL("connect");
    return s;
}

static void read_exact(int fd, char *buf, size_t len) {
    size_t got = 0;
    while (got < len) {
        ssize_t n = read(fd, buf + got, len - got);
        if (n <= 0) FAIL("read_exact: %zd", n);
        got += (size_t)n;
    }
}

int main(int argc, char **argv) {
    if (argc != 4) return 2;
    struct sockaddr_in echo = make_addr(argv[1], atoi(argv[2]));
    struct sockaddr_in closed = make_addr(argv[1], atoi(argv[3]));

    /* close(2) without tcpd_close closes the connection in the daemon. */
    int first = connected(&echo);
    char buf[64];
    if (write(first, "x", 1) != 1 || read(first, buf, 1) != 1) FAIL("first echo");
    if (close(first) < 0) FAIL("close");
    printf("closed\n");
    fflush(stdout);
    if (!fgets(buf, sizeof buf, stdin)) FAIL("no go-ahead on stdin");

    /* select(2): writable at once, readable once the echo is back. */
    int s = connected(&echo);
    fd_set rd, wr;
    FD_ZERO(&rd);
    FD_ZERO(&wr);
    FD_SET(s, &wr);
    struct timeval tv = {5, 0};
    if (select(s + 1, NULL, &wr, NULL, &tv) != 1 || !FD_ISSET(s, &wr)) FAIL("select writable");
    if (write(s, "select", 6) != 6) FAIL("write");
    FD_ZERO(&rd);
    FD_SET(s, &rd);
    tv.tv_sec = 5;
    if (select(s + 1, &rd, NULL, NULL, &tv) != 1 || !FD_ISSET(s, &rd)) FAIL("select readable");
    /* FIONREAD: what a read returns at once (the echo may come in parts). */
    int avail = 0;
    if (ioctl(s, FIONREAD, &avail) < 0 || avail < 1 || avail > 6) FAIL("FIONREAD %d", avail);
    read_exact(s, buf, 6);
    if (memcmp(buf, "select", 6) != 0) FAIL("select echo");
    if (ioctl(s, FIONREAD, &avail) < 0 || avail != 0) FAIL("FIONREAD after read %d", avail);
    printf("ok select, FIONREAD\n");

    /* writev / readv */
    struct iovec out[3] = {{"one-", 4}, {"two-", 4}, {"three", 5}};
    if (writev(s, out, 3) != 13) FAIL("writev");
    char a[4], b[9];
    struct iovec in[2] = {{a, sizeof a}, {b, sizeof b}};
    size_t got = 0;
    while (got < 13) {
        ssize_t n = readv(s, in, 2);
        if (n <= 0) FAIL("readv");
        got += (size_t)n;
        /* advance the iovecs past what was read */
        size_t skip = (size_t)n;
        for (int i = 0; i < 2; i++) {
            size_t k = skip < in[i].iov_len ? skip : in[i].iov_len;
            in[i].iov_base = (char *)in[i].iov_base + k;
            in[i].iov_len -= k;
            skip -= k;
        }
    }
    if (memcmp(a, "one-", 4) != 0 || memcmp(b, "two-three", 9) != 0) FAIL("readv contents");
    printf("ok readv/writev\n");

    /* sendmsg / recvmsg (no ancillary data) */
    struct iovec mo[2] = {{"send", 4}, {"msg", 3}};
    struct msghdr mh = {.msg_iov = mo, .msg_iovlen = 2};
    if (sendmsg(s, &mh, MSG_NOSIGNAL) != 7) FAIL("sendmsg");
    char r[7];
    got = 0;
    while (got < 7) {
        struct iovec ri = {r + got, 7 - got};
        struct msghdr rh = {.msg_iov = &ri, .msg_iovlen = 1};
        ssize_t n = recvmsg(s, &rh, 0);
        if (n <= 0) FAIL("recvmsg");
        got += (size_t)n;
    }
    if (memcmp(r, "sendmsg", 7) != 0) FAIL("recvmsg contents");
    /* send/recv with flags */
    if (send(s, "peek", 4, MSG_NOSIGNAL) != 4) FAIL("send");
    char pk[4];
    fd_set prd;
    FD_ZERO(&prd);
    FD_SET(s, &prd);
    tv.tv_sec = 5;
    select(s + 1, &prd, NULL, NULL, &tv);
    if (recv(s, pk, 4, MSG_PEEK | MSG_WAITALL) != 4 || recv(s, pk, 4, MSG_WAITALL) != 4 || memcmp(pk, "peek", 4) != 0)
        FAIL("recv MSG_PEEK/MSG_WAITALL");
    printf("ok sendmsg/recvmsg, send/recv\n");

    if (close(s) < 0) FAIL("close");

    /* Non-blocking connect through epoll: EPOLLOUT once established. */
    int n = tcpd_socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (n < 0) FAIL("tcpd_socket");
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLOUT | EPOLLET, .data.fd = n};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, n, &ev) < 0) FAIL("epoll_ctl");
    struct epoll_event got_ev;
    if (epoll_wait(ep, &got_ev, 1, 0) != 0) FAIL("an unconnected socket is writable");
    EXPECT_ERRNO(tcpd_connect(n, (struct sockaddr *)&echo, sizeof echo), EINPROGRESS);
    if (epoll_wait(ep, &got_ev, 1, 5000) != 1 || !(got_ev.events & EPOLLOUT)) FAIL("no EPOLLOUT");
    int err = -1;
    socklen_t elen = sizeof err;
    if (tcpd_getsockopt(n, SOL_SOCKET, SO_ERROR, &err, &elen) < 0 || err != 0) FAIL("SO_ERROR %d", err);
    struct sockaddr_in peer;
    socklen_t plen = sizeof peer;
    if (tcpd_getpeername(n, (struct sockaddr *)&peer, &plen) < 0 || peer.sin_port != echo.sin_port) FAIL("getpeername");
    if (write(n, "nb", 2) != 2) FAIL("write after connect");
    ev.events = EPOLLIN;
    if (epoll_ctl(ep, EPOLL_CTL_MOD, n, &ev) < 0) FAIL("epoll_ctl mod");
    if (epoll_wait(ep, &got_ev, 1, 5000) != 1) FAIL("echo through epoll");
    if (read(n, buf, 2) != 2 || memcmp(buf, "nb", 2) != 0) FAIL("nb echo");
    close(n);
    printf("ok non-blocking connect with epoll\n");

    /* A refused one: EPOLLOUT with EPOLLERR and EPOLLHUP (EPOLLOUT may come
     * a moment after the other two), SO_ERROR ECONNREFUSED once, then a
     * plain read(2) sees EOF, as on Linux. */
    n = tcpd_socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    ev.events = EPOLLOUT;
    ev.data.fd = n;
    if (epoll_ctl(ep, EPOLL_CTL_ADD, n, &ev) < 0) FAIL("epoll_ctl");
    EXPECT_ERRNO(tcpd_connect(n, (struct sockaddr *)&closed, sizeof closed), EINPROGRESS);
    uint32_t seen = 0;
    for (int i = 0; i < 100 && !(seen & EPOLLOUT); i++) {
        if (epoll_wait(ep, &got_ev, 1, 5000) != 1) FAIL("refused: no event");
        seen |= got_ev.events;
        if (!(got_ev.events & EPOLLOUT)) usleep(1000);
    }
    if (!(seen & EPOLLOUT) || !(seen & EPOLLHUP) || !(seen & EPOLLERR)) FAIL("refused: events %#x", seen);
    if (tcpd_getsockopt(n, SOL_SOCKET, SO_ERROR, &err, &elen) < 0 || err != ECONNREFUSED) FAIL("SO_ERROR %d", err);
    if (tcpd_getsockopt(n, SOL_SOCKET, SO_ERROR, &err, &elen) < 0 || err != 0) FAIL("SO_ERROR twice %d", err);
    if (read(n, buf, 1) != 0) FAIL("read of a refused socket");
    if (tcpd_close(n) < 0) FAIL("tcpd_close");
    close(ep);
    printf("ok refused non-blocking connect with epoll\n");
    printf("fdcalls ok\n");
    return 0;
}
