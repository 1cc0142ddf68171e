/* fuzz_config.c - libFuzzer target: the configuration file parser and the
 * value parsers must reject any input with an error, never crash. */
#include "config/config.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct config c;
    struct ferry_err err;
    int fd = memfd_create("ferry-fuzz-config", 0);
    if (fd < 0)
        return 0;
    if (write(fd, data, size) != (ssize_t)size) {
        close(fd);
        return 0;
    }
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    char *argv[] = {"ferryd", "--config", path, NULL};
    char *envp[] = {NULL};
    config_load(&c, 3, argv, envp, &err);
    close(fd);

    char s[512];
    size_t n = size < sizeof s - 1 ? size : sizeof s - 1;
    memcpy(s, data, n);
    s[n] = '\0';
    struct config_member members[CONFIG_MAX_MEMBERS];
    uint32_t count;
    config_parse_membership(s, members, CONFIG_MAX_MEMBERS, &count, &err);
    uint64_t v;
    config_parse_size(s, &v);
    config_parse_duration(s, &v);
    struct config_endpoint ep;
    config_parse_endpoint(s, 7878, &ep);
    return 0;
}
