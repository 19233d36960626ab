/* Several threads, each with its own tcpd connection, at the same time;
 * one more thread sits blocked in tcpd_read the whole while, proving a
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

/* A connection to the echo peer on which nothing is sent until the end:
 * its reader thread stays blocked in tcpd_read the whole time. */
static int idle_fd;

static void *blocked_reader(void *arg) {
    (void)arg;
    char byte = 0;
    ssize_t n = tcpd_read(idle_fd, &byte, 1);
    if (n != 1 || byte != 'x') FAIL("blocked reader got %zd '%c'", n, byte);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 5) return 2;
    int nthreads = atoi(argv[3]);
    size_t bytes = strtoull(argv[4], NULL, 10);
    if (nthreads < 1 || nthreads > 64) return 2;

    struct sockaddr_in echo_addr = make_addr(argv[1], atoi(argv[2]));
    idle_fd = tcpd_socket(AF_INET, SOCK_STREAM, 0);
    if (idle_fd < 0 || tcpd_connect(idle_fd, (struct sockaddr *)&echo_addr, sizeof echo_addr) < 0)
        FAIL("idle connection");
    pthread_t blocked;
    pthread_create(&blocked, NULL, blocked_reader, NULL);
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

    /* release the blocked reader: the echo peer sends the byte back */
    write_all(idle_fd, "x", 1);
    pthread_join(blocked, NULL);
    if (tcpd_close(idle_fd) < 0) FAIL("tcpd_close");
    printf("threads ok %d\n", nthreads);
    return 0;
}
