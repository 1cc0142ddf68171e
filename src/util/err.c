/* err.c - status names/texts (from FERRY_STATUS_MAP) and struct ferry_err helpers. */
#include "util/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *ferry_strerror(int status)
{
    switch (status) {
#define XX(name, value, text)                                                  \
    case value:                                                                \
        return text;
        FERRY_STATUS_MAP(XX)
#undef XX
    default:
        return "unknown error";
    }
}

const char *ferry_errname(int status)
{
    switch (status) {
#define XX(name, value, text)                                                  \
    case value:                                                                \
        return #name;
        FERRY_STATUS_MAP(XX)
#undef XX
    default:
        return "EUNKNOWN";
    }
}

void ferry_err_clear(struct ferry_err *err)
{
    if (err == NULL)
        return;
    err->code = 0;
    err->msg[0] = '\0';
}

int ferry_err_set(struct ferry_err *err, int code, const char *fmt, ...)
{
    if (err == NULL)
        return code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    err->code = code;
    return code;
}

int ferry_err_wrap(struct ferry_err *err, const char *fmt, ...)
{
    if (err == NULL)
        return 0;
    char prefix[FERRY_ERRMSG_MAX];
    char old[FERRY_ERRMSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    size_t n = strnlen(prefix, sizeof err->msg - 1);
    memcpy(err->msg, prefix, n);
    size_t room = sizeof err->msg - 1 - n;
    const char sep[] = ": ";
    size_t s = room < 2 ? room : 2;
    memcpy(err->msg + n, sep, s);
    n += s;
    room -= s;
    size_t o = strnlen(old, room);
    memcpy(err->msg + n, old, o);
    err->msg[n + o] = '\0';
    return err->code;
}
