/* The fork() rule of libtcpd: a child starts its own daemon session on
 * first use; sockets inherited from the parent are not sockets in the child
 * (EBADF, POLLNVAL) except that tcpd_close releases the child's copy of the
 * descriptor. The parent's socket is untouched by anything the child does.
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

    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) FAIL("fork");
    if (pid == 0) {
        char byte;
        EXPECT_ERRNO(tcpd_read(s, &byte, 1), EBADF);
        EXPECT_ERRNO(tcpd_write(s, "x", 1), EBADF);
        struct pollfd p = {.fd = s, .events = POLLIN};
        if (tcpd_poll(&p, 1, 0) != 1 || p.revents != POLLNVAL) FAIL("inherited socket poll: %#x", p.revents);
        if (tcpd_close(s) != 0) FAIL("closing the inherited copy");
        EXPECT_ERRNO(tcpd_close(s), EBADF);
        /* The child's own session works. */
        int c = tcpd_socket(AF_INET, SOCK_STREAM, 0);
        if (c < 0 || tcpd_connect(c, (struct sockaddr *)&echo, sizeof echo) < 0) FAIL("child connect");
        echo_round(c, "child");
        if (tcpd_close(c) < 0) FAIL("child close");
        printf("child ok\n");
        fflush(stdout);
        _exit(0);
    }
    int status = 0;
    if (waitpid(pid, &status, 0) != pid) FAIL("waitpid");
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) FAIL("child failed: status %#x", status);
    echo_round(s, "parent-after");
    if (tcpd_close(s) < 0) FAIL("parent close");
    printf("fork ok\n");
    return 0;
}
