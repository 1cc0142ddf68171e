/* log.c - one fprintf per line keeps lines whole across threads. */
#include "util/log.h"

#include <ferry/status.h>
#include <stdarg.h>
#include <stdio.h>
#include <strings.h>
#include <time.h>

static enum log_level log_threshold = LOG_INFO;
static const char *const level_names[] = {"DEBUG", "INFO", "WARN", "ERROR", "OFF"};

void log_set_level(enum log_level level)
{
    log_threshold = level;
}

enum log_level log_get_level(void)
{
    return log_threshold;
}

const char *log_level_name(enum log_level level)
{
    return (unsigned)level <= LOG_OFF ? level_names[level] : "?";
}

int log_level_parse(const char *s, enum log_level *out)
{
    static const char *const lower[] = {"debug", "info", "warn", "error", "off"};
    for (int i = 0; i <= LOG_OFF; i++) {
        if (strcasecmp(s, lower[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    if (strcasecmp(s, "warning") == 0) {
        *out = LOG_WARN;
        return 0;
    }
    return FERRY_EINVAL;
}

void log_write(enum log_level level, const char *module, const char *fmt, ...)
{
    if (level < log_threshold)
        return;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s [%s] %s\n", tm.tm_year + 1900,
            tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000,
            log_level_name(level), module, msg);
}
