/* fork() with a shared socket: the descriptor is real, so a child uses the
 * socket it inherited as a child process uses an inherited kernel socket —
 * data with read/write/poll, control calls (getpeername, options) after
 * the library claims the socket for the child's own daemon session by
 * presenting the descriptor. The connection lives while any process holds
 * a copy: the child's exit (and its close) leaves the parent's socket
 * working, and the parent's close (without tcpd_close: plain close(2),
 * the last copy) ends it with a FIN the echo peer answers.
 *
 * usage: fork IP ECHO_PORT */
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"

static void echo_round(int fd, const char *msg) {
    size_t len = strlen(msg);
    write_all(fd, msg, len);
    char back[64] = {0};
    ssize_t n = tcpd_recv(fd, back, len, MSG_WAITALL);
    if (n != (ssize_t)len || memcmp(back, msg, len) != 0) FAIL("echo of '%s' came back as '%s'", msg, back);
}

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    struct sockaddr_in echo = make_addr(argv[1], atoi(argv[2]));
    int s = tcpd_socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0 || tcpd_connect(s, (struct sockaddr *)&echo, sizeof echo) < 0) FAIL("parent connect");
    echo_round(s, "parent-before");
    struct sockaddr_in local;
    socklen_t len = sizeof local;
    if (tcpd_getsockname(s, (struct sockaddr *)&local, &len) < 0) FAIL("parent getsockname");

    /* An option set on a fresh socket before fork (libtcpd keeps it for
       the connect) is in force when the child connects it. */
    int fresh = tcpd_socket(AF_INET, SOCK_STREAM, 0);
    int keepcnt = 5;
    if (fresh < 0 || tcpd_setsockopt(fresh, IPPROTO_TCP, TCP_KEEPCNT, &keepcnt, sizeof keepcnt) < 0)
        FAIL("fresh socket option");

    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) FAIL("fork");
    if (pid == 0) {
        if (tcpd_connect(fresh, (struct sockaddr *)&echo, sizeof echo) < 0) FAIL("child connect of the fresh socket");
        int got = 0;
        socklen_t got_len = sizeof got;
        if (tcpd_getsockopt(fresh, IPPROTO_TCP, TCP_KEEPCNT, &got, &got_len) < 0 || got != 5)
            FAIL("TCP_KEEPCNT set before fork, after the child's connect: %d", got);
        echo_round(fresh, "child-fresh");
        if (tcpd_close(fresh) < 0) FAIL("child close fresh");
        /* Data: the kernel's descriptor, shared with the parent. */
        echo_round(s, "child-inherited");
        struct pollfd p = {.fd = s, .events = POLLOUT};
        if (tcpd_poll(&p, 1, 1000) != 1 || !(p.revents & POLLOUT)) FAIL("inherited socket poll: %#x", p.revents);
        /* Control: claimed for the child's session. */
        struct sockaddr_in child_local, peer;
        len = sizeof child_local;
        if (tcpd_getsockname(s, (struct sockaddr *)&child_local, &len) < 0) FAIL("child getsockname");
        if (child_local.sin_port != local.sin_port) FAIL("child sees another socket");
        len = sizeof peer;
        if (tcpd_getpeername(s, (struct sockaddr *)&peer, &len) < 0 || peer.sin_port != echo.sin_port)
            FAIL("child getpeername");
        int one = 1;
        if (tcpd_setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0) FAIL("child setsockopt");
        /* A dup names the same socket. */
        int d = dup(s);
        if (d < 0) FAIL("dup");
        echo_round(d, "child-dup");
        close(d);
        /* The child's own new sockets work too. */
        int c = tcpd_socket(AF_INET, SOCK_STREAM, 0);
        if (c < 0 || tcpd_connect(c, (struct sockaddr *)&echo, sizeof echo) < 0) FAIL("child connect");
        echo_round(c, "child-own");
        if (tcpd_close(c) < 0) FAIL("child close");
        /* Closing the child's copy leaves the parent's socket open. */
        if (tcpd_close(s) != 0) FAIL("closing the inherited copy");
        printf("child ok\n");
        fflush(stdout);
        _exit(0);
    }
    close(fresh);
    int status = 0;
    if (waitpid(pid, &status, 0) != pid) FAIL("waitpid");
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) FAIL("child failed: status %#x", status);
    echo_round(s, "parent-after");
    int one = 0;
    len = sizeof one;
    if (tcpd_getsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, &len) < 0 || one != 1)
        FAIL("the child's TCP_NODELAY on the shared socket: %d", one);
    /* Half-close on the descriptor: the peer sees EOF and closes; we read EOF. */
    if (tcpd_shutdown(s, SHUT_WR) < 0) FAIL("shutdown");
    char byte;
    ssize_t n = tcpd_read(s, &byte, 1);
    if (n != 0) FAIL("EOF after the echo peer closed: %zd", n);
    if (close(s) < 0) FAIL("parent close");
    printf("fork ok\n");
    return 0;
}
