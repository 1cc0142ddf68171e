/* test_port.h - a free TCP port on 127.0.0.1 for a test listener. */
#ifndef FERRY_TEST_PORT_H
#define FERRY_TEST_PORT_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* A port for a test listener, taken below the kernel's ephemeral range:
 * a port from that range may meanwhile become the local end of some other
 * process's outgoing connection (the test clients make thousands), and then
 * ferryd's bind fails. Ports below it are only ever taken by a bind, so the
 * bind check here is close to a promise; the ports this process handed out
 * are remembered so that no two nodes of one test share one. */
static inline uint16_t test_free_port(void)
{
    static uint16_t given[256];
    static unsigned n_given;
    static unsigned seed;
    unsigned lo = 32768;
    FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
    if (f != NULL) {
        if (fscanf(f, "%u", &lo) != 1)
            lo = 32768;
        fclose(f);
    }
    if (lo <= 12000)
        lo = 32768;
    if (seed == 0)
        seed = (unsigned)getpid() * 2654435761u ^ (unsigned)time(NULL);
    for (int attempt = 0; attempt < 10000; attempt++) {
        seed = seed * 1103515245u + 12345u;
        uint16_t port = (uint16_t)(10000 + (seed >> 8) % (lo - 10000));
        int dup = 0;
        for (unsigned i = 0; i < n_given && i < 256; i++)
            dup |= given[i] == port;
        if (dup)
            continue;
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0)
            break;
        struct sockaddr_in sa = {.sin_family = AF_INET,
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                                 .sin_port = htons(port)};
        int ok = bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
        close(fd);
        if (ok) {
            given[n_given++ % 256] = port;
            return port;
        }
    }
    perror("free_port");
    abort();
}

#endif
