/* Bulk transfer with an end-to-end SHA-256 check.
 *
 * usage: sha_client IP PORT BYTES sink|echo
 *   sink: blocking socket; sends BYTES of pattern in uneven chunk sizes
 *         (up to 3 MiB, so single calls exceed the shim's 1 MiB RPC chunk),
 *         half-closes, then reads the peer's hex SHA-256 of what it got and
 *         compares it with its own.
 *   echo: non-blocking socket and a tcpd_poll loop that writes and reads at
 *         once; compares the SHA-256 of the bytes echoed back with the sent.
 * Prints "sha ok <hex>" and exits 0 on a match. */
#include <poll.h>
#include <unistd.h>

#include "common.h"
#include "sha256.h"

static int connect_to(const char *ip, int port, int type) {
    int fd = tcpd_socket(AF_INET, type, 0);
    if (fd < 0) FAIL("tcpd_socket");
    struct sockaddr_in a = make_addr(ip, port);
    if (tcpd_connect(fd, (struct sockaddr *)&a, sizeof a) < 0 && errno != EINPROGRESS) FAIL("tcpd_connect");
    return fd;
}

static int sink(const char *ip, int port, size_t total) {
    int fd = connect_to(ip, port, SOCK_STREAM);
    size_t max_chunk = 3u << 20;
    uint8_t *buf = malloc(max_chunk);
    if (!buf) FAIL("malloc");
    sha256_ctx sent;
    sha256_init(&sent);
    uint32_t pattern = 12345, sizes = 777;
    size_t done = 0;
    while (done < total) {
        sizes = sizes * 1103515245u + 12345u;
        size_t chunk = 1 + (sizes >> 4) % max_chunk;
        if (chunk > total - done) chunk = total - done;
        fill_pattern(buf, chunk, &pattern);
        sha256_update(&sent, buf, chunk);
        write_all(fd, buf, chunk);
        done += chunk;
    }
    if (tcpd_shutdown(fd, SHUT_WR) < 0) FAIL("tcpd_shutdown");
    char got[65] = {0}, want[65];
    size_t have = 0;
    for (;;) {
        ssize_t r = tcpd_recv(fd, got + have, sizeof got - 1 - have, MSG_WAITALL);
        if (r < 0) FAIL("tcpd_recv");
        if (r == 0) break;
        have += (size_t)r;
        if (have == 64) break;
    }
    sha256_hex(&sent, want);
    if (tcpd_close(fd) < 0) FAIL("tcpd_close");
    free(buf);
    if (have != 64 || strcmp(got, want) != 0) {
        fprintf(stderr, "FAIL: peer digest %s, sent %s\n", got, want);
        return 1;
    }
    printf("sha ok %s\n", want);
    return 0;
}

static int echo(const char *ip, int port, size_t total) {
    int fd = connect_to(ip, port, SOCK_STREAM | SOCK_NONBLOCK);
    enum { CHUNK = 200000 };
    static uint8_t out[CHUNK], in[CHUNK];
    sha256_ctx sent, received;
    sha256_init(&sent);
    sha256_init(&received);
    uint32_t pattern = 999;
    size_t produced = 0, out_off = 0, out_len = 0, got = 0;
    int wr_closed = 0;
    while (got < total) {
        if (out_off == out_len && produced < total) {
            out_len = total - produced < CHUNK ? total - produced : CHUNK;
            out_off = 0;
            fill_pattern(out, out_len, &pattern);
            sha256_update(&sent, out, out_len);
            produced += out_len;
        }
        if (out_off == out_len && produced == total && !wr_closed) {
            if (tcpd_shutdown(fd, SHUT_WR) < 0) FAIL("tcpd_shutdown");
            wr_closed = 1;
        }
        struct pollfd p = {.fd = fd, .events = POLLIN | (out_off < out_len ? POLLOUT : 0)};
        int n = tcpd_poll(&p, 1, 10000);
        if (n < 0) FAIL("tcpd_poll");
        if (n == 0) FAIL("stalled at %zu/%zu", got, total);
        if (p.revents & (POLLERR | POLLNVAL)) FAIL("revents %#x", p.revents);
        if (p.revents & POLLOUT) {
            ssize_t w = tcpd_send(fd, out + out_off, out_len - out_off, MSG_NOSIGNAL);
            if (w < 0 && errno != EAGAIN) FAIL("tcpd_send");
            if (w > 0) out_off += (size_t)w;
        }
        if (p.revents & (POLLIN | POLLHUP)) {
            ssize_t r = tcpd_recv(fd, in, sizeof in, MSG_DONTWAIT);
            if (r < 0 && errno != EAGAIN) FAIL("tcpd_recv");
            if (r == 0) FAIL("early EOF at %zu/%zu", got, total);
            if (r > 0) {
                sha256_update(&received, in, (size_t)r);
                got += (size_t)r;
            }
        }
    }
    char a[65], b[65];
    sha256_hex(&sent, a);
    sha256_hex(&received, b);
    if (tcpd_close(fd) < 0) FAIL("tcpd_close");
    if (strcmp(a, b) != 0) {
        fprintf(stderr, "FAIL: echoed %s, sent %s\n", b, a);
        return 1;
    }
    printf("sha ok %s\n", a);
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: sha_client IP PORT BYTES sink|echo\n");
        return 2;
    }
    size_t total = strtoull(argv[3], NULL, 10);
    if (strcmp(argv[4], "sink") == 0) return sink(argv[1], atoi(argv[2]), total);
    if (strcmp(argv[4], "echo") == 0) return echo(argv[1], atoi(argv[2]), total);
    return 2;
}
