/* util/err.h - an error value that carries a code and a message a person can act on.
 *
 * Layers pass a `struct ferry_err *` down; the layer that detects a failure
 * fills it with ferry_err_set() ("queue 'orders' is full (capacity 10000)"),
 * and outer layers may prefix context with ferry_err_wrap(). A NULL err is
 * allowed everywhere and means "caller does not want the message".
 */
#ifndef FERRY_UTIL_ERR_H
#define FERRY_UTIL_ERR_H

#include <ferry/status.h>
#include <stddef.h>

#define FERRY_ERRMSG_MAX 256

struct ferry_err {
    int code;                    /* 0 or a negative FERRY_E* code */
    char msg[FERRY_ERRMSG_MAX];  /* NUL-terminated; "" when code is 0 */
};

/* Clear err (code 0, empty message). */
void ferry_err_clear(struct ferry_err *err);
/* Set code and printf-style message; returns code so callers can `return ferry_err_set(...)`. */
int ferry_err_set(struct ferry_err *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Prefix the existing message with "<context>: "; returns err->code (or code 0 if err NULL). */
int ferry_err_wrap(struct ferry_err *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
