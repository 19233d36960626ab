/* POSIX error reporting of libtcpd: -1 plus errno, never a signal.
 *
 * usage: errors IP CLOSED_PORT CLOSER_PORT
 * CLOSED_PORT must refuse connections; CLOSER_PORT must accept and close
 * at once (to provoke EPIPE). SIGPIPE keeps its default action (kill), so
 * the EPIPE check also proves tcpd raises no SIGPIPE. */
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include "common.h"

int main(int argc, char **argv) {
    if (argc != 4) return 2;
    signal(SIGPIPE, SIG_DFL);
    struct sockaddr_in closed = make_addr(argv[1], atoi(argv[2]));
    struct sockaddr_in closer = make_addr(argv[1], atoi(argv[3]));

    /* socket(2) arguments */
    EXPECT_ERRNO(tcpd_socket(AF_PACKET, SOCK_STREAM, 0), EAFNOSUPPORT); /* AF_INET6 is supported */
    EXPECT_ERRNO(tcpd_socket(AF_UNIX, SOCK_STREAM, 0), EAFNOSUPPORT);
    EXPECT_ERRNO(tcpd_socket(AF_INET, SOCK_DGRAM, 0), EPROTONOSUPPORT);
    EXPECT_ERRNO(tcpd_socket(AF_INET, SOCK_STREAM, IPPROTO_UDP), EPROTONOSUPPORT);
    EXPECT_ERRNO(tcpd_socket(AF_INET, SOCK_STREAM | 0x100, 0), EINVAL);

    /* unknown and closed descriptors */
    char buf[16] = {0};
    EXPECT_ERRNO(tcpd_read(4321, buf, sizeof buf), EBADF);
    EXPECT_ERRNO(tcpd_close(-1), EBADF);
    EXPECT_ERRNO(tcpd_fcntl(STDIN_FILENO, F_GETFL), EBADF);
    int s = tcpd_socket(AF_INET, SOCK_STREAM, 0);
    /* tcpd_strerror names the daemon's socket when it cannot be reached. */
    if (s < 0) FAIL("tcpd_socket: %s", tcpd_strerror(errno));
    if (s <= STDERR_FILENO) FAIL("fd %d collides with stdio", s);
    if (fcntl(s, F_GETFD) < 0) FAIL("the fd number is not a real open fd");
    if (tcpd_close(s) < 0) FAIL("tcpd_close");
    EXPECT_ERRNO(tcpd_write(s, "x", 1), EBADF);
    EXPECT_ERRNO(tcpd_close(s), EBADF);
    EXPECT_ERRNO(tcpd_listen(s, 1), EBADF);

    /* bad arguments */
    s = tcpd_socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0) FAIL("tcpd_socket");
    EXPECT_ERRNO(tcpd_shutdown(s, 42), EINVAL);
    EXPECT_ERRNO(tcpd_accept4(s, NULL, NULL, 0x4000), EINVAL);
    EXPECT_ERRNO(tcpd_bind(s, (struct sockaddr *)&closed, 8), EINVAL);
    /* An IPv6 address on an IPv4 socket: EAFNOSUPPORT, as Linux. */
    struct sockaddr_in6 v6 = {0};
    v6.sin6_family = AF_INET6;
    v6.sin6_port = closed.sin_port;
    v6.sin6_addr.s6_addr[15] = 1;
    EXPECT_ERRNO(tcpd_connect(s, (struct sockaddr *)&v6, sizeof v6), EAFNOSUPPORT);
    int one = 1;
    EXPECT_ERRNO(tcpd_setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, 2), EINVAL);
    EXPECT_ERRNO(tcpd_setsockopt(s, SOL_SOCKET, SO_BROADCAST, &one, sizeof one), ENOPROTOOPT);
    EXPECT_ERRNO(tcpd_fcntl(s, F_DUPFD, 0), EINVAL);
    EXPECT_ERRNO(tcpd_recv(s, buf, 1, MSG_OOB), EINVAL);

    /* null pointers */
    socklen_t len = sizeof closed;
    EXPECT_ERRNO(tcpd_bind(s, NULL, sizeof closed), EFAULT);
    EXPECT_ERRNO(tcpd_connect(s, NULL, sizeof closed), EFAULT);
    EXPECT_ERRNO(tcpd_getsockname(s, NULL, &len), EFAULT);
    EXPECT_ERRNO(tcpd_getsockname(s, (struct sockaddr *)&closed, NULL), EFAULT);
    EXPECT_ERRNO(tcpd_read(s, NULL, 10), EFAULT);
    EXPECT_ERRNO(tcpd_send(s, NULL, 10, 0), EFAULT);
    EXPECT_ERRNO(tcpd_getsockopt(s, SOL_SOCKET, SO_ERROR, NULL, &len), EFAULT);
    EXPECT_ERRNO(tcpd_poll(NULL, 1, 0), EFAULT);

    /* options round trip, with Linux's truncation on a short buffer */
    if (tcpd_setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0) FAIL("TCP_NODELAY");
    int val = 0;
    len = sizeof val;
    if (tcpd_getsockopt(s, IPPROTO_TCP, TCP_NODELAY, &val, &len) < 0 || val != 1 || len != sizeof val)
        FAIL("TCP_NODELAY read back %d len %u", val, len);
    int idle = 30;
    if (tcpd_setsockopt(s, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle) < 0) FAIL("TCP_KEEPIDLE");
    val = 0;
    len = sizeof val;
    if (tcpd_getsockopt(s, IPPROTO_TCP, TCP_KEEPIDLE, &val, &len) < 0 || val != 30) FAIL("TCP_KEEPIDLE read back %d", val);
    struct linger lg = {.l_onoff = 1, .l_linger = 5};
    if (tcpd_setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof lg) < 0) FAIL("SO_LINGER");
    struct linger lg2 = {0, 0};
    len = sizeof lg2;
    if (tcpd_getsockopt(s, SOL_SOCKET, SO_LINGER, &lg2, &len) < 0 || !lg2.l_onoff || lg2.l_linger != 5)
        FAIL("SO_LINGER read back %d/%d", lg2.l_onoff, lg2.l_linger);
    if (tcpd_setsockopt(s, IPPROTO_TCP, TCP_CONGESTION, "cubic", 5) < 0) FAIL("TCP_CONGESTION");
    char cc[32] = {0};
    len = sizeof cc;
    if (tcpd_getsockopt(s, IPPROTO_TCP, TCP_CONGESTION, cc, &len) < 0 || strcmp(cc, "cubic") != 0)
        FAIL("TCP_CONGESTION read back '%s'", cc);
    short half = 0;
    len = sizeof half;
    if (tcpd_getsockopt(s, IPPROTO_TCP, TCP_NODELAY, &half, &len) < 0 || len != sizeof half)
        FAIL("short getsockopt buffer: len %u", len);
    printf("ok options\n");

    /* not connected yet */
    struct sockaddr_in peer;
    len = sizeof peer;
    EXPECT_ERRNO(tcpd_getpeername(s, (struct sockaddr *)&peer, &len), ENOTCONN);
    /* refused blocking connect */
    EXPECT_ERRNO(tcpd_connect(s, (struct sockaddr *)&closed, sizeof closed), ECONNREFUSED);
    if (tcpd_close(s) < 0) FAIL("tcpd_close");

    /* EPIPE, not SIGPIPE: write to a connection the peer closed. */
    s = tcpd_socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0) FAIL("tcpd_socket");
    /* Options set between socket() and connect() travel with the connect
       (one request): they are in force once connected. */
    int ka = 1, cnt = 7;
    if (tcpd_setsockopt(s, SOL_SOCKET, SO_KEEPALIVE, &ka, sizeof ka) < 0) FAIL("SO_KEEPALIVE");
    if (tcpd_setsockopt(s, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt) < 0) FAIL("TCP_KEEPCNT");
    EXPECT_ERRNO(tcpd_setsockopt(s, IPPROTO_TCP, TCP_KEEPCNT, &cnt, 2), EINVAL);
    if (tcpd_connect(s, (struct sockaddr *)&closer, sizeof closer) < 0) FAIL("connect to closer");
    val = 0;
    len = sizeof val;
    if (tcpd_getsockopt(s, SOL_SOCKET, SO_KEEPALIVE, &val, &len) < 0 || val != 1) FAIL("SO_KEEPALIVE after connect: %d", val);
    val = 0;
    if (tcpd_getsockopt(s, IPPROTO_TCP, TCP_KEEPCNT, &val, &len) < 0 || val != 7) FAIL("TCP_KEEPCNT after connect: %d", val);
    printf("ok options carried by connect\n");
    int saw_epipe = 0;
    for (int i = 0; i < 500 && !saw_epipe; i++) {
        ssize_t w = tcpd_write(s, "data", 4);
        if (w < 0) {
            if (errno == EPIPE) saw_epipe = 1;
            else if (errno != ECONNRESET) FAIL("write after peer close");
        }
        usleep(10000);
    }
    if (!saw_epipe) FAIL("no EPIPE after the peer closed");
    printf("ok EPIPE without SIGPIPE\n");
    if (tcpd_close(s) < 0) FAIL("tcpd_close");

    printf("errors ok\n");
    return 0;
}
