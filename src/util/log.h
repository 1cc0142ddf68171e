/* util/log.h - leveled logging to stderr with UTC timestamps.
 *
 * Line format: "2026-11-22T04:50:43.123Z INFO  [module] message". The level
 * threshold is a process-wide setting (log_set_level), set once by main()
 * from the `log_level` configuration key; logging is thread-safe (one
 * fprintf per line).
 */
#ifndef FERRY_UTIL_LOG_H
#define FERRY_UTIL_LOG_H

enum log_level { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARN = 2, LOG_ERROR = 3, LOG_OFF = 4 };

void log_set_level(enum log_level level);
enum log_level log_get_level(void);
/* Parse "debug"/"info"/"warn"/"error"/"off" (case-insensitive); 0 or FERRY_EINVAL. */
int log_level_parse(const char *s, enum log_level *out);
const char *log_level_name(enum log_level level);

void log_write(enum log_level level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define log_debug(mod, ...)                                                    \
    do {                                                                       \
        if (log_get_level() <= LOG_DEBUG)                                      \
            log_write(LOG_DEBUG, mod, __VA_ARGS__);                            \
    } while (0)
#define log_info(mod, ...) log_write(LOG_INFO, mod, __VA_ARGS__)
#define log_warn(mod, ...) log_write(LOG_WARN, mod, __VA_ARGS__)
#define log_error(mod, ...) log_write(LOG_ERROR, mod, __VA_ARGS__)

#endif
