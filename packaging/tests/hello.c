/* packaging/tests/hello.c: a C client of libtcpd built only from installed
 * files (header and library found through `pkg-config tcpd`), used by
 * test-deb.sh on the build machine and by test-systemd-inside.sh in the
 * container.
 *
 *   hello                 prints the file tcpd_socket was resolved from
 *   hello listen P        socket/bind 0.0.0.0:P/listen/getsockname/close through
 *                         the daemon; prints "listening on A:P"
 *   hello echo A P MSG    connects to A:P (an echo server), writes MSG, reads
 *                         it back, closes; prints "echoed N bytes"
 *
 * The daemon is found at $TCPD_SOCKET or the default socket path. On an error
 * it prints the failing call and tcpd_strerror(errno) and exits 1.
 */
#define _GNU_SOURCE
#include <tcpd.h>
#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int die(const char *what) {
    /* tcpd_strerror names the daemon socket when it is the daemon that failed. */
    printf("%s: %s\n", what, tcpd_strerror(errno));
    return 1;
}

static int listen_on(const char *port) {
    struct sockaddr_in want = {0}, got = {0};
    socklen_t len = sizeof got;
    int fd = tcpd_socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return die("tcpd_socket");
    want.sin_family = AF_INET;
    want.sin_port = htons((unsigned short)atoi(port));
    want.sin_addr.s_addr = htonl(INADDR_ANY);
    if (tcpd_bind(fd, (struct sockaddr *)&want, sizeof want) != 0) return die("tcpd_bind");
    if (tcpd_listen(fd, 8) != 0) return die("tcpd_listen");
    if (tcpd_getsockname(fd, (struct sockaddr *)&got, &len) != 0) return die("tcpd_getsockname");
    printf("listening on %s:%u\n", inet_ntoa(got.sin_addr), ntohs(got.sin_port));
    if (tcpd_close(fd) != 0) return die("tcpd_close");
    return 0;
}

static int echo(const char *address, const char *port, const char *msg) {
    struct sockaddr_in peer = {0};
    char back[4096];
    size_t want = strlen(msg), got = 0;
    if (want == 0 || want > sizeof back) {
        printf("message must be 1 to %zu bytes\n", sizeof back);
        return 1;
    }
    peer.sin_family = AF_INET;
    peer.sin_port = htons((unsigned short)atoi(port));
    if (inet_pton(AF_INET, address, &peer.sin_addr) != 1) {
        printf("bad address %s\n", address);
        return 1;
    }
    int fd = tcpd_socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return die("tcpd_socket");
    if (tcpd_connect(fd, (struct sockaddr *)&peer, sizeof peer) != 0) return die("tcpd_connect");
    if (tcpd_write(fd, msg, want) != (ssize_t)want) return die("tcpd_write");
    while (got < want) {
        ssize_t n = tcpd_read(fd, back + got, want - got);
        if (n < 0) return die("tcpd_read");
        if (n == 0) break;
        got += (size_t)n;
    }
    if (got != want || memcmp(back, msg, want) != 0) {
        printf("echo mismatch: sent %zu bytes, got %zu back\n", want, got);
        return 1;
    }
    if (tcpd_close(fd) != 0) return die("tcpd_close");
    printf("echoed %zu bytes\n", got);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "listen") == 0) return listen_on(argv[2]);
    if (argc == 5 && strcmp(argv[1], "echo") == 0) return echo(argv[2], argv[3], argv[4]);
    if (argc != 1) {
        fprintf(stderr, "usage: hello [listen PORT | echo ADDRESS PORT MESSAGE]\n");
        return 2;
    }
    /* The address of tcpd_socket proves the symbol resolved from libtcpd.so.0. */
    Dl_info info;
    if (dladdr((void *)&tcpd_socket, &info) == 0 || info.dli_fname == NULL) return 2;
    printf("%s\n", info.dli_fname);
    return 0;
}
