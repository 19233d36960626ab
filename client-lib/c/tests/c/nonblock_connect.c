/* Non-blocking connect, and poll mixing tcpd sockets with a pipe (tcpd
 * sockets are real descriptors: this is poll(2)).
 *
 * usage: nonblock_connect IP OPEN_PORT CLOSED_PORT
 * OPEN_PORT must accept connections (and not send); CLOSED_PORT must refuse. */
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "common.h"

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static volatile sig_atomic_t alarms;
static void on_alarm(int sig) {
    (void)sig;
    alarms++;
}

static int so_error(int fd) {
    int err = -1;
    socklen_t len = sizeof err;
    if (tcpd_getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) FAIL("SO_ERROR");
    if (len != sizeof err) FAIL("SO_ERROR optlen %u", len);
    return err;
}

int main(int argc, char **argv) {
    if (argc != 4) return 2;
    struct sockaddr_in open_addr = make_addr(argv[1], atoi(argv[2]));
    struct sockaddr_in closed_addr = make_addr(argv[1], atoi(argv[3]));
    int pipefd[2];
    if (pipe(pipefd) < 0) FAIL("pipe");

    int s = tcpd_socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (s < 0) FAIL("tcpd_socket");
    if (!(tcpd_fcntl(s, F_GETFL) & O_NONBLOCK)) FAIL("SOCK_NONBLOCK not reflected in F_GETFL");
    EXPECT_ERRNO(tcpd_connect(s, (struct sockaddr *)&open_addr, sizeof open_addr), EINPROGRESS);
    /* A second connect while the first is in flight: EALREADY, or — if the
     * handshake already finished — EISCONN (or 0, Linux's one-time report). */
    errno = 0;
    int again = tcpd_connect(s, (struct sockaddr *)&open_addr, sizeof open_addr);
    if (!(again == 0 || errno == EALREADY || errno == EISCONN)) FAIL("second connect: %d", again);
    printf("ok second connect -> %s\n", again == 0 ? "0" : errno == EALREADY ? "EALREADY" : "EISCONN");

    /* Completion shows as POLLOUT; the pipe in the same call stays quiet. */
    struct pollfd p[2] = {{.fd = s, .events = POLLOUT}, {.fd = pipefd[0], .events = POLLIN}};
    int n = tcpd_poll(p, 2, 5000);
    if (n != 1 || !(p[0].revents & POLLOUT) || p[1].revents != 0)
        FAIL("connect completion poll: n=%d revents %#x %#x", n, p[0].revents, p[1].revents);
    if (so_error(s) != 0) FAIL("SO_ERROR after connect");
    EXPECT_ERRNO(tcpd_connect(s, (struct sockaddr *)&open_addr, sizeof open_addr), EISCONN);
    char byte;
    EXPECT_ERRNO(tcpd_read(s, &byte, 1), EAGAIN);
    EXPECT_ERRNO(tcpd_recv(s, &byte, 1, MSG_PEEK), EAGAIN);
    printf("ok connected\n");

    /* An ordinary fd ready first wins at once, with an infinite timeout. */
    if (write(pipefd[1], "x", 1) != 1) FAIL("write pipe");
    struct pollfd q[2] = {{.fd = s, .events = POLLIN}, {.fd = pipefd[0], .events = POLLIN}};
    double t0 = now_ms();
    n = tcpd_poll(q, 2, -1);
    double waited = now_ms() - t0;
    if (n != 1 || q[0].revents != 0 || q[1].revents != POLLIN)
        FAIL("pipe-first poll: n=%d revents %#x %#x", n, q[0].revents, q[1].revents);
    if (waited > 2000) FAIL("pipe-first poll took %.0f ms", waited);
    printf("ok ordinary fd wins in %.1f ms\n", waited);
    if (read(pipefd[0], &byte, 1) != 1) FAIL("read pipe");

    /* Nothing ready: the timeout is honoured. */
    q[0].revents = q[1].revents = 0;
    t0 = now_ms();
    n = tcpd_poll(q, 2, 300);
    waited = now_ms() - t0;
    if (n != 0 || q[0].revents || q[1].revents) FAIL("timeout poll: n=%d", n);
    if (waited < 290 || waited > 3000) FAIL("timeout poll took %.0f ms", waited);
    printf("ok timeout after %.0f ms\n", waited);

    /* A signal during the wait (handler without SA_RESTART): tcpd_poll is
     * poll(2), which ends with EINTR (never restarted); nothing is ready. */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    if (sigaction(SIGALRM, &sa, NULL) < 0) FAIL("sigaction");
    struct itimerval tick = {.it_interval = {0, 50000}, .it_value = {0, 50000}};
    if (setitimer(ITIMER_REAL, &tick, NULL) < 0) FAIL("setitimer");
    q[0].revents = q[1].revents = 0;
    t0 = now_ms();
    n = tcpd_poll(q, 2, 300);
    waited = now_ms() - t0;
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &off, NULL);
    if (!(n == 0 || (n < 0 && errno == EINTR))) FAIL("poll under signals: n=%d", n);
    if (n == 0 && waited < 290) FAIL("poll under signals returned after %.0f ms", waited);
    printf("ok %d signals during poll, returned %s after %.0f ms\n", (int)alarms, n < 0 ? "EINTR" : "0", waited);

    /* Only tcpd sockets, timeout 0: a sample. */
    n = tcpd_poll(q, 1, 0);
    if (n != 0) FAIL("zero-timeout poll: n=%d", n);

    /* A refused non-blocking connect: POLLOUT with POLLERR and POLLHUP, as
     * Linux (the pair may show POLLERR|POLLHUP a moment before POLLOUT:
     * wait for POLLOUT), and SO_ERROR says ECONNREFUSED once, then 0. */
    int r = tcpd_socket(AF_INET, SOCK_STREAM, 0);
    if (r < 0) FAIL("tcpd_socket");
    if (tcpd_fcntl(r, F_SETFL, tcpd_fcntl(r, F_GETFL) | O_NONBLOCK) < 0) FAIL("F_SETFL");
    errno = 0;
    if (tcpd_connect(r, (struct sockaddr *)&closed_addr, sizeof closed_addr) == 0) FAIL("connect to closed port succeeded");
    if (errno == EINPROGRESS) {
        struct pollfd e = {.fd = r, .events = POLLOUT};
        short seen = 0;
        for (int i = 0; i < 100 && !(seen & POLLOUT); i++) {
            n = tcpd_poll(&e, 1, 5000);
            if (n != 1) FAIL("refused poll: n=%d", n);
            seen |= e.revents;
            if (!(e.revents & POLLOUT)) usleep(1000);
        }
        if (!(seen & POLLOUT) || !(seen & POLLERR) || !(seen & POLLHUP))
            FAIL("refused poll: revents %#x", seen);
        int err = so_error(r);
        if (err != ECONNREFUSED) FAIL("SO_ERROR %d, want ECONNREFUSED", err);
        if (so_error(r) != 0) FAIL("SO_ERROR not cleared by reading it");
    } else if (errno != ECONNREFUSED) {
        FAIL("connect to closed port");
    }
    printf("ok refused non-blocking connect\n");

    if (tcpd_close(r) < 0 || tcpd_close(s) < 0) FAIL("tcpd_close");
    printf("nonblock_connect ok\n");
    return 0;
}
