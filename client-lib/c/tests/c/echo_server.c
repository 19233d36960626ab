/* Echo server over tcpd: one poll loop over a non-blocking listener, up to
 * MAX_CLIENTS clients and a (never ready) pipe, so every tcpd_poll mixes
 * tcpd sockets with an ordinary fd. Handles partial writes by keeping
 * unsent bytes and waiting for POLLOUT (and stops reading that client
 * meanwhile, so a slow reader applies back-pressure).
 *
 * usage: echo_server IP PORT CLIENTS   (PORT 0 = any; prints "listening P")
 * Exits 0 after CLIENTS connections were served and closed. */
#include <poll.h>
#include <unistd.h>

#include "common.h"

#define MAX_CLIENTS 64
#define BUF_SIZE 65536

struct client {
    int fd;
    uint8_t buf[BUF_SIZE];
    size_t off, len; /* unsent bytes: buf[off..len] */
    uint64_t echoed;
};

static struct client clients[MAX_CLIENTS];

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: echo_server IP PORT CLIENTS\n");
        return 2;
    }
    int want = atoi(argv[3]);
    if (want < 1 || want > MAX_CLIENTS) return 2;
    int lfd = tcpd_socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (lfd < 0) FAIL("tcpd_socket");
    int one = 1;
    if (tcpd_setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0) FAIL("SO_REUSEADDR");
    struct sockaddr_in addr = make_addr(argv[1], atoi(argv[2]));
    if (tcpd_bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0) FAIL("tcpd_bind");
    if (tcpd_listen(lfd, 16) < 0) FAIL("tcpd_listen");
    socklen_t len = sizeof addr;
    if (tcpd_getsockname(lfd, (struct sockaddr *)&addr, &len) < 0) FAIL("tcpd_getsockname");
    if (len != sizeof addr || addr.sin_family != AF_INET) FAIL("getsockname result");
    printf("listening %d\n", ntohs(addr.sin_port));
    fflush(stdout);

    int idle[2];
    if (pipe(idle) < 0) FAIL("pipe");
    int accepted = 0, finished = 0, nclients = 0;
    for (int i = 0; i < MAX_CLIENTS; i++) clients[i].fd = -1;

    while (finished < want) {
        struct pollfd pfds[MAX_CLIENTS + 2];
        int slot_of[MAX_CLIENTS + 2];
        nfds_t n = 0;
        pfds[n].fd = idle[0];
        pfds[n].events = POLLIN;
        slot_of[n++] = -2;
        pfds[n].fd = accepted < want ? lfd : -1; /* negative fd: ignored */
        pfds[n].events = POLLIN;
        slot_of[n++] = -1;
        for (int i = 0; i < MAX_CLIENTS; i++) {
            if (clients[i].fd < 0) continue;
            pfds[n].fd = clients[i].fd;
            pfds[n].events = clients[i].off < clients[i].len ? POLLOUT : POLLIN;
            slot_of[n++] = i;
        }
        int ready = tcpd_poll(pfds, n, 10000);
        if (ready < 0) FAIL("tcpd_poll");
        if (ready == 0) FAIL("tcpd_poll timed out with %d/%d clients finished", finished, want);
        if (pfds[0].revents) FAIL("idle pipe reported %#x", pfds[0].revents);
        for (nfds_t k = 1; k < n; k++) {
            short re = pfds[k].revents;
            if (!re) continue;
            if (re & POLLNVAL) FAIL("POLLNVAL on fd %d", pfds[k].fd);
            int slot = slot_of[k];
            if (slot == -1) {
                struct sockaddr_in peer;
                socklen_t plen = sizeof peer;
                int cfd = tcpd_accept4(lfd, (struct sockaddr *)&peer, &plen, SOCK_NONBLOCK);
                if (cfd < 0) {
                    if (errno == EAGAIN) continue;
                    FAIL("tcpd_accept4");
                }
                if (plen != sizeof peer || peer.sin_family != AF_INET) FAIL("accept peer address");
                int i = 0;
                while (clients[i].fd >= 0) i++;
                clients[i].fd = cfd;
                clients[i].off = clients[i].len = 0;
                clients[i].echoed = 0;
                accepted++;
                nclients++;
                continue;
            }
            struct client *c = &clients[slot];
            if (c->off < c->len) {
                ssize_t w = tcpd_write(c->fd, c->buf + c->off, c->len - c->off);
                if (w < 0 && errno != EAGAIN) FAIL("tcpd_write");
                if (w > 0) c->off += (size_t)w;
                continue;
            }
            ssize_t r = tcpd_read(c->fd, c->buf, BUF_SIZE);
            if (r < 0) {
                if (errno == EAGAIN) continue;
                FAIL("tcpd_read");
            }
            if (r == 0) {
                if (tcpd_close(c->fd) < 0) FAIL("tcpd_close");
                fprintf(stderr, "client %d done after %llu bytes\n", slot, (unsigned long long)c->echoed);
                c->fd = -1;
                finished++;
                nclients--;
                continue;
            }
            c->echoed += (uint64_t)r;
            c->off = 0;
            c->len = (size_t)r;
            ssize_t w = tcpd_write(c->fd, c->buf, c->len);
            if (w < 0 && errno != EAGAIN) FAIL("tcpd_write");
            if (w > 0) c->off = (size_t)w;
        }
    }
    if (tcpd_close(lfd) < 0) FAIL("tcpd_close listener");
    printf("served %d\n", finished);
    return 0;
}
