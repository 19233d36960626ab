/* Helpers shared by the libtcpd C test programs. */
#ifndef TCPD_TEST_COMMON_H
#define TCPD_TEST_COMMON_H

#include <arpa/inet.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tcpd.h>

#define FAIL(...)                                                   \
    do {                                                            \
        fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);        \
        fprintf(stderr, __VA_ARGS__);                               \
        fprintf(stderr, " (errno %d: %s)\n", errno, strerror(errno)); \
        exit(1);                                                    \
    } while (0)

/* Asserts that `call` failed with -1 and errno `want`. */
#define EXPECT_ERRNO(call, want)                                              \
    do {                                                                      \
        errno = 0;                                                            \
        long r_ = (long)(call);                                               \
        if (r_ != -1 || errno != (want))                                      \
            FAIL("%s: want -1/%s, got %ld/%d", #call, #want, r_, errno);      \
        printf("ok %s -> %s\n", #call, #want);                                \
    } while (0)

static inline struct sockaddr_in make_addr(const char *ip, int port) {
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, ip, &a.sin_addr) != 1) {
        fprintf(stderr, "bad address %s\n", ip);
        exit(2);
    }
    return a;
}

/* Writes all of buf to a blocking tcpd socket, handling partial writes. */
static inline void write_all(int fd, const void *buf, size_t len) {
    const uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = tcpd_write(fd, p, len);
        if (n < 0) FAIL("tcpd_write");
        p += n;
        len -= (size_t)n;
    }
}

/* Deterministic test bytes (xorshift32) so both ends can regenerate them. */
static inline void fill_pattern(uint8_t *buf, size_t len, uint32_t *state) {
    for (size_t i = 0; i < len; i++) {
        uint32_t x = *state;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *state = x;
        buf[i] = (uint8_t)x;
    }
}

#endif
