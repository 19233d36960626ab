/* IPv6 through libtcpd, written the way a portable C program is: addresses
 * come from getaddrinfo(3) and go to tcpd_socket/tcpd_connect as they are
 * (ai_family, ai_addr, ai_addrlen), and addresses come back as
 * struct sockaddr_in6 in a struct sockaddr_storage.
 *
 * usage: ipv6 HOST6 HOST4 ECHO_PORT
 *   1. getaddrinfo(HOST6, ECHO_PORT) -> AF_INET6; connect to the kernel's
 *      echo server, 256 KiB echoed and compared; getpeername/getsockname
 *      are sockaddr_in6; IPV6_V6ONLY reads 0 (Linux's bindv6only = 0) and
 *      is EINVAL to change once connected; IPV6_V6ONLY on an AF_INET
 *      socket is ENOPROTOOPT.
 *   2. an AF_INET6 socket to the IPv4-mapped ::ffff:HOST4 reaches the same
 *      echo server over IPv4; both ends are seen as IPv4-mapped.
 *   3. an AF_INET6 listener on in6addr_any: prints "listening PORT", then
 *      echoes two kernel clients in turn, printing "accepted ADDR PORT
 *      mapped|native" for each (an IPv4 client is IPv4-mapped).
 * Prints "ipv6 ok" and exits 0 when all is well. */
#include <netdb.h>
#include <netinet/in.h>
#include <unistd.h>

#include "common.h"

static void echo_round_trip(int fd, size_t total) {
    static uint8_t out[16384], in[16384];
    uint32_t pattern = 4242;
    for (size_t done = 0; done < total; done += sizeof out) {
        fill_pattern(out, sizeof out, &pattern);
        write_all(fd, out, sizeof out);
        size_t got = 0;
        while (got < sizeof in) {
            ssize_t r = tcpd_read(fd, in + got, sizeof in - got);
            if (r <= 0) FAIL("tcpd_read of the echo");
            got += (size_t)r;
        }
        if (memcmp(out, in, sizeof out) != 0) FAIL("echo differs at %zu", done);
    }
}

/* The text of an IPv6 socket address. */
static const char *text6(const struct sockaddr_in6 *a, char *buf) {
    if (!inet_ntop(AF_INET6, &a->sin6_addr, buf, INET6_ADDRSTRLEN)) FAIL("inet_ntop");
    return buf;
}

static void expect_in6(const struct sockaddr_storage *ss, socklen_t len, const char *what) {
    if (ss->ss_family != AF_INET6 || len != sizeof(struct sockaddr_in6))
        FAIL("%s: family %d, length %u (want AF_INET6, %zu)", what, ss->ss_family, (unsigned)len,
             sizeof(struct sockaddr_in6));
}

static int connect_getaddrinfo(const char *host, const char *port, struct sockaddr_in6 *peer) {
    struct addrinfo hints, *res, *ai;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) FAIL("getaddrinfo %s: %s", host, gai_strerror(rc));
    int fd = -1;
    for (ai = res; ai; ai = ai->ai_next) {
        fd = tcpd_socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
        if (fd < 0) continue;
        if (tcpd_connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) break;
        tcpd_close(fd);
        fd = -1;
    }
    if (fd < 0 || ai->ai_family != AF_INET6) FAIL("no IPv6 connection to %s", host);
    memcpy(peer, ai->ai_addr, sizeof *peer);
    freeaddrinfo(res);
    return fd;
}

static void client(const char *host6, const char *port) {
    struct sockaddr_in6 want;
    int fd = connect_getaddrinfo(host6, port, &want);
    echo_round_trip(fd, 256 * 1024);
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    char a[INET6_ADDRSTRLEN], b[INET6_ADDRSTRLEN];
    if (tcpd_getpeername(fd, (struct sockaddr *)&ss, &len) < 0) FAIL("tcpd_getpeername");
    expect_in6(&ss, len, "getpeername");
    struct sockaddr_in6 peer6;
    memcpy(&peer6, &ss, sizeof peer6);
    const struct sockaddr_in6 *peer = &peer6;
    if (memcmp(&peer->sin6_addr, &want.sin6_addr, 16) != 0 || peer->sin6_port != want.sin6_port)
        FAIL("peer [%s]:%d, want [%s]:%d", text6(peer, a), ntohs(peer->sin6_port), text6(&want, b),
             ntohs(want.sin6_port));
    len = sizeof ss;
    if (tcpd_getsockname(fd, (struct sockaddr *)&ss, &len) < 0) FAIL("tcpd_getsockname");
    expect_in6(&ss, len, "getsockname");
    const struct sockaddr_in6 *local = (const struct sockaddr_in6 *)&ss;
    if (IN6_IS_ADDR_V4MAPPED(&local->sin6_addr) || local->sin6_port == 0)
        FAIL("local [%s]:%d", text6(local, a), ntohs(local->sin6_port));
    printf("connected [%s]:%d -> [%s]:%d\n", text6(local, a), ntohs(local->sin6_port),
           text6(peer, b), ntohs(peer->sin6_port));
    int v6only = -1;
    socklen_t optlen = sizeof v6only;
    if (tcpd_getsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, &optlen) < 0) FAIL("IPV6_V6ONLY");
    if (v6only != 0 || optlen != sizeof v6only) FAIL("IPV6_V6ONLY reads %d", v6only);
    int one = 1;
    EXPECT_ERRNO(tcpd_setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one), EINVAL);
    if (tcpd_close(fd) < 0) FAIL("tcpd_close");
    int fd4 = tcpd_socket(AF_INET, SOCK_STREAM, 0);
    if (fd4 < 0) FAIL("tcpd_socket AF_INET");
    EXPECT_ERRNO(tcpd_setsockopt(fd4, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one), ENOPROTOOPT);
    tcpd_close(fd4);
}

static void mapped_client(const char *host4, int port) {
    struct sockaddr_in6 to;
    memset(&to, 0, sizeof to);
    to.sin6_family = AF_INET6;
    to.sin6_port = htons((uint16_t)port);
    char mapped[64];
    snprintf(mapped, sizeof mapped, "::ffff:%s", host4);
    if (inet_pton(AF_INET6, mapped, &to.sin6_addr) != 1) FAIL("inet_pton %s", mapped);
    int fd = tcpd_socket(AF_INET6, SOCK_STREAM, 0);
    if (fd < 0) FAIL("tcpd_socket AF_INET6");
    if (tcpd_connect(fd, (struct sockaddr *)&to, sizeof to) < 0) FAIL("connect to %s", mapped);
    echo_round_trip(fd, 64 * 1024);
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    char a[INET6_ADDRSTRLEN];
    if (tcpd_getsockname(fd, (struct sockaddr *)&ss, &len) < 0) FAIL("tcpd_getsockname");
    expect_in6(&ss, len, "getsockname (mapped)");
    if (!IN6_IS_ADDR_V4MAPPED(&((struct sockaddr_in6 *)&ss)->sin6_addr))
        FAIL("local %s is not IPv4-mapped", text6((struct sockaddr_in6 *)&ss, a));
    len = sizeof ss;
    if (tcpd_getpeername(fd, (struct sockaddr *)&ss, &len) < 0) FAIL("tcpd_getpeername");
    expect_in6(&ss, len, "getpeername (mapped)");
    if (memcmp(&((struct sockaddr_in6 *)&ss)->sin6_addr, &to.sin6_addr, 16) != 0)
        FAIL("peer %s", text6((struct sockaddr_in6 *)&ss, a));
    printf("mapped ok %s\n", mapped);
    tcpd_close(fd);
}

static void server(void) {
    int lfd = tcpd_socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (lfd < 0) FAIL("tcpd_socket");
    struct sockaddr_in6 any;
    memset(&any, 0, sizeof any);
    any.sin6_family = AF_INET6;
    any.sin6_addr = in6addr_any;
    if (tcpd_bind(lfd, (struct sockaddr *)&any, sizeof any) < 0) FAIL("tcpd_bind [::]:0");
    if (tcpd_listen(lfd, 8) < 0) FAIL("tcpd_listen");
    socklen_t len = sizeof any;
    if (tcpd_getsockname(lfd, (struct sockaddr *)&any, &len) < 0) FAIL("tcpd_getsockname");
    printf("listening %d\n", ntohs(any.sin6_port));
    fflush(stdout);
    for (int i = 0; i < 2; i++) {
        struct sockaddr_storage ss;
        len = sizeof ss;
        int fd = tcpd_accept(lfd, (struct sockaddr *)&ss, &len);
        if (fd < 0) FAIL("tcpd_accept");
        expect_in6(&ss, len, "accept");
        const struct sockaddr_in6 *peer = (const struct sockaddr_in6 *)&ss;
        char a[INET6_ADDRSTRLEN];
        printf("accepted %s %d %s\n", text6(peer, a), ntohs(peer->sin6_port),
               IN6_IS_ADDR_V4MAPPED(&peer->sin6_addr) ? "mapped" : "native");
        fflush(stdout);
        static uint8_t buf[65536];
        for (;;) {
            ssize_t r = tcpd_read(fd, buf, sizeof buf);
            if (r < 0) FAIL("tcpd_read");
            if (r == 0) break;
            write_all(fd, buf, (size_t)r);
        }
        if (tcpd_close(fd) < 0) FAIL("tcpd_close");
    }
    tcpd_close(lfd);
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: ipv6 HOST6 HOST4 ECHO_PORT\n");
        return 2;
    }
    client(argv[1], argv[3]);
    mapped_client(argv[2], atoi(argv[3]));
    server();
    printf("ipv6 ok\n");
    return 0;
}
