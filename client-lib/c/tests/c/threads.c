/* Several threads, each with its own tcpd connection, at the same time;
 * one more thread sits blocked in tcpd_accept the whole while, proving a
 * blocking call does not hold up the others.
 *
 * usage: threads IP ECHO_PORT THREADS BYTES_PER_THREAD */
#include <pthread.h>
#include <unistd.h>

#include "common.h"

struct job {
    struct sockaddr_in addr;
    size_t bytes;
    uint32_t seed;
    int ok;
};

static void *worker(void *arg) {
    struct job *job = arg;
    int fd = tcpd_socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) FAIL("tcpd_socket");
    if (tcpd_connect(fd, (struct sockaddr *)&job->addr, sizeof job->addr) < 0) FAIL("tcpd_connect");
    enum { CHUNK = 16384 };
    uint8_t out[CHUNK], in[CHUNK];
    uint32_t state = job->seed;
    for (size_t done = 0; done < job->bytes;) {
        size_t n = job->bytes - done < CHUNK ? job->bytes - done : CHUNK;
        fill_pattern(out, n, &state);
        write_all(fd, out, n);
        ssize_t got = tcpd_recv(fd, in, n, MSG_WAITALL);
        if (got != (ssize_t)n) FAIL("thread %u: recv %zd of %zu", job->seed, got, n);
        if (memcmp(in, out, n) != 0) FAIL("thread %u: echo mismatch at %zu", job->seed, done);
        done += n;
    }
    if (tcpd_close(fd) < 0) FAIL("tcpd_close");
    job->ok = 1;
    return NULL;
}

static int listener;

static void *acceptor(void *arg) {
    (void)arg;
    int c = tcpd_accept(listener, NULL, NULL); /* blocks until main connects */
    if (c < 0) FAIL("tcpd_accept");
    tcpd_close(c);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 5) return 2;
    int nthreads = atoi(argv[3]);
    size_t bytes = strtoull(argv[4], NULL, 10);
    if (nthreads < 1 || nthreads > 64) return 2;

    listener = tcpd_socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in any = make_addr(argv[1], 0);
    if (listener < 0 || tcpd_bind(listener, (struct sockaddr *)&any, sizeof any) < 0 || tcpd_listen(listener, 4) < 0)
        FAIL("listener");
    socklen_t len = sizeof any;
    if (tcpd_getsockname(listener, (struct sockaddr *)&any, &len) < 0) FAIL("getsockname");
    pthread_t blocked;
    pthread_create(&blocked, NULL, acceptor, NULL);
    usleep(50000); /* let it block in the daemon */

    pthread_t tids[64];
    struct job jobs[64];
    for (int i = 0; i < nthreads; i++) {
        jobs[i] = (struct job){.addr = make_addr(argv[1], atoi(argv[2])), .bytes = bytes, .seed = 1000u + (uint32_t)i};
        pthread_create(&tids[i], NULL, worker, &jobs[i]);
    }
    for (int i = 0; i < nthreads; i++) pthread_join(tids[i], NULL);
    for (int i = 0; i < nthreads; i++)
        if (!jobs[i].ok) FAIL("thread %d", i);

    /* release the acceptor */
    int c = tcpd_socket(AF_INET, SOCK_STREAM, 0);
    if (c < 0 || tcpd_connect(c, (struct sockaddr *)&any, sizeof any) < 0) FAIL("connect to own listener");
    pthread_join(blocked, NULL);
    tcpd_close(c);
    tcpd_close(listener);
    printf("threads ok %d\n", nthreads);
    return 0;
}
