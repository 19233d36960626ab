/* COUNT tcpd sockets open at once in one process: all connected to the
 * kernel echo server, all in one epoll set, one round trip each, then all
 * closed with plain close(2); prints "closed COUNT" and waits for a line on
 * stdin (the test checks meanwhile that the daemon released them all).
 *
 * usage: many IP ECHO_PORT COUNT */
#include <sys/epoll.h>
#include <sys/resource.h>
#include <unistd.h>

#include "common.h"

int main(int argc, char **argv) {
    if (argc != 4) return 2;
    struct sockaddr_in echo = make_addr(argv[1], atoi(argv[2]));
    int count = atoi(argv[3]);
    struct rlimit lim;
    if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < (rlim_t)count + 64) {
        lim.rlim_cur = (rlim_t)count + 64;
        if (lim.rlim_max < lim.rlim_cur) lim.rlim_max = lim.rlim_cur;
        if (setrlimit(RLIMIT_NOFILE, &lim) < 0) FAIL("setrlimit");
    }
    int *fds = calloc((size_t)count, sizeof *fds);
    int ep = epoll_create1(0);
    for (int i = 0; i < count; i++) {
        fds[i] = tcpd_socket(AF_INET, SOCK_STREAM, 0);
        if (fds[i] < 0) FAIL("socket %d", i);
        if (tcpd_connect(fds[i], (struct sockaddr *)&echo, sizeof echo) < 0) FAIL("connect %d", i);
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev) < 0) FAIL("epoll_ctl %d", i);
    }
    printf("open %d\n", count);
    fflush(stdout);
    for (int i = 0; i < count; i++) {
        unsigned char b = (unsigned char)i;
        if (write(fds[i], &b, 1) != 1) FAIL("write %d", i);
    }
    int answered = 0;
    char *seen = calloc((size_t)count, 1);
    while (answered < count) {
        struct epoll_event evs[64];
        int n = epoll_wait(ep, evs, 64, 30000);
        if (n <= 0) FAIL("epoll_wait: %d answered of %d", answered, count);
        for (int k = 0; k < n; k++) {
            uint32_t i = evs[k].data.u32;
            unsigned char b;
            if (read(fds[i], &b, 1) != 1 || b != (unsigned char)i) FAIL("echo %u", i);
            if (seen[i]++) FAIL("twice %u", i);
            answered++;
        }
    }
    for (int i = 0; i < count; i++) close(fds[i]);
    printf("closed %d\n", count);
    fflush(stdout);
    char line[16];
    if (!fgets(line, sizeof line, stdin)) FAIL("no go-ahead on stdin");
    printf("many ok %d\n", count);
    return 0;
}
