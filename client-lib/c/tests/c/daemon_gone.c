/* What a program sees when the daemon goes away under it: calls fail with
 * -1 and an errno (never a crash, never SIGPIPE, which keeps its default
 * action here), including the call that was blocked at the time.
 *
 * usage: daemon_gone IP ECHO_PORT [restart]
 * Prints "connected", then blocks in tcpd_read until the test stops the
 * daemon; prints "daemon_gone ok" when every later call failed cleanly.
 * With "restart": then waits for a line on stdin (the daemon is back) and
 * checks that the old socket stays dead (EBADF for tcpd calls, POLLHUP from
 * poll: its descriptor's other end died with the daemon) even though the
 * new session reuses its handle number, while new sockets work. The calls
 * that were cut off fail with ECONNABORTED (the daemon is gone), never
 * ECONNRESET (which would blame the peer). */
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include "common.h"

int main(int argc, char **argv) {
    if (argc != 3 && argc != 4) return 2;
    signal(SIGPIPE, SIG_DFL);
    struct sockaddr_in echo = make_addr(argv[1], atoi(argv[2]));
    int s = tcpd_socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0 || tcpd_connect(s, (struct sockaddr *)&echo, sizeof echo) < 0) FAIL("connect");
    printf("connected\n");
    fflush(stdout);
    char buf[16];
    errno = 0;
    ssize_t n = tcpd_read(s, buf, sizeof buf);
    if (n != -1 || errno != ECONNABORTED) FAIL("blocked read returned %zd (errno %d)", n, errno);
    printf("blocked read -> errno %d (%s)\n", errno, strerror(errno));
    for (int i = 0; i < 50; i++) {
        errno = 0;
        if (tcpd_write(s, "data", 4) != -1 || errno == 0) FAIL("write %d after the daemon left", i);
    }
    printf("writes -> errno %d (%s)\n", errno, strerror(errno));
    errno = 0;
    if (tcpd_socket(AF_INET, SOCK_STREAM, 0) != -1 || errno == 0) FAIL("socket after the daemon left");
    printf("socket -> errno %d (%s)\n", errno, strerror(errno));
    printf("daemon_gone ok\n");
    fflush(stdout);
    if (argc < 4 || strcmp(argv[3], "restart") != 0) return 0;

    char line[64];
    if (!fgets(line, sizeof line, stdin)) FAIL("no restart line");
    int fresh = tcpd_socket(AF_INET, SOCK_STREAM, 0);
    if (fresh < 0 || tcpd_connect(fresh, (struct sockaddr *)&echo, sizeof echo) < 0) FAIL("new session");
    EXPECT_ERRNO(tcpd_write(s, "old", 3), EBADF);
    struct pollfd p = {.fd = s, .events = POLLIN};
    if (tcpd_poll(&p, 1, 0) != 1 || !(p.revents & POLLHUP)) FAIL("old socket poll %#x", p.revents);
    write_all(fresh, "new", 3);
    char back[4] = {0};
    if (tcpd_recv(fresh, back, 3, MSG_WAITALL) != 3 || strcmp(back, "new") != 0) FAIL("echo on the new session");
    if (tcpd_close(s) != 0) FAIL("closing the old socket");
    if (tcpd_close(fresh) != 0) FAIL("closing the new socket");
    printf("restart ok\n");
    return 0;
}
