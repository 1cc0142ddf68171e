/* config/config_internal.h - what config.c, parse.c and load.c share; not part of the module's
 * public face (config.h is).
 *
 * Parsers that can fail in more than one way write the reason, in words a
 * person can act on, into a `why` buffer of CONFIG_WHY_MAX bytes; config_set
 * puts the source, the key and the value in front of it.
 */
#ifndef FERRY_CONFIG_INTERNAL_H
#define FERRY_CONFIG_INTERNAL_H

#include "config/config.h"
#include <stddef.h>
#include <stdint.h>

#define CONFIG_WHY_MAX 200
#define CONFIG_VALUE_MAX 8192 /* longest value (and config file line) accepted, NUL included */
#define CONFIG_SHOWN_MAX 64   /* buffer for config_shown */
#define CONFIG_PRIORITY_MAX 65535

/* Write a reason into why (n bytes); returns -1 so callers can `return config_fail(...)`. */
int config_fail(char *why, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Parse "host:port", "host", "[v6]:port" or "[v6]"; a missing port takes
 * default_port, or is an error when default_port is 0. 0 or -1 with why. */
int config_endpoint_parse(const char *s, uint16_t default_port, struct config_endpoint *out,
                          char *why, size_t n);

/* Rules a membership list must follow on its own: ids 1.., unique ids,
 * unique addresses, at least one member that is not a witness. 0 or -1 with why. */
int config_members_check(const struct config_member *m, uint32_t count, char *why, size_t n);

/* Printed forms that the parsers read back to the same value. */
void config_format_size(uint64_t bytes, char *out, size_t n);  /* "64M", "6000K", "0" */
void config_format_duration(uint64_t ms, char *out, size_t n); /* "1d", "300ms", "0" */
void config_format_endpoint(const struct config_endpoint *e, char *out, size_t n);
void config_format_members(const struct config_member *m, uint32_t count, char *out, size_t n);

/* s itself if short, else its first characters and "..." in buf (CONFIG_SHOWN_MAX bytes):
 * keeps error messages readable when a value is long. */
const char *config_shown(const char *s, char *buf);

/* Is name (any case, dashes or underscores) a configuration key? */
int config_key_known(const char *name);

/* "<data_dir>/raft", the default replication_logfile_directory. 0 or -1 if it does not fit. */
int config_raft_dir(const char *data_dir, char *out, size_t n);

#endif
