/* parse.c - the value syntaxes of ferryd's configuration and their printed forms.
 *
 * Numbers with K/M/G suffixes, durations, booleans, host:port endpoints and
 * cluster membership lists. A parser reads the whole string or fails: no sign,
 * no inner or trailing junk, no overflow. Ranges are each key's business
 * (config.c); parsers reject only what no key could accept. Every formatter
 * writes what its parser reads back to the same value, which is what lets
 * config_print round-trip.
 */
#include "config/config_internal.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define KIB 1024ull

struct unit {
    const char *name;
    uint64_t scale;
};

/* Largest first, so formatting picks the largest unit that divides exactly. */
static const struct unit size_units[] = {{"G", KIB *KIB *KIB}, {"M", KIB *KIB}, {"K", KIB}};
static const struct unit duration_units[] = {
    {"d", 86400000}, {"h", 3600000}, {"m", 60000}, {"s", 1000}, {"ms", 1}};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* Decimal digits at *p (at least one) into *out; *p moves past them. -1 on overflow. */
static int parse_digits(const char **p, uint64_t *out)
{
    const char *s = *p;
    uint64_t v = 0;
    if (!isdigit((unsigned char)*s))
        return -1;
    for (; isdigit((unsigned char)*s); s++) {
        uint64_t d = (uint64_t)(*s - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *p = s;
    *out = v;
    return 0;
}

/* A number followed by one of units (case-insensitive) or by nothing (bare_scale). */
static int parse_scaled(const char *s, const struct unit *units, size_t nunits, uint64_t bare_scale,
                        uint64_t *out)
{
    uint64_t v, scale = bare_scale;
    if (parse_digits(&s, &v) != 0)
        return FERRY_EINVAL;
    if (*s != '\0') {
        size_t i = 0;
        while (i < nunits && strcasecmp(s, units[i].name) != 0)
            i++;
        if (i == nunits)
            return FERRY_EINVAL;
        scale = units[i].scale;
    }
    if (v > UINT64_MAX / scale)
        return FERRY_EINVAL;
    *out = v * scale;
    return 0;
}

int config_parse_size(const char *s, uint64_t *out)
{
    return parse_scaled(s, size_units, COUNT(size_units), 1, out);
}

int config_parse_duration(const char *s, uint64_t *ms_out)
{
    return parse_scaled(s, duration_units, COUNT(duration_units), 1000, ms_out);
}

int config_parse_bool(const char *s, int *out)
{
    static const char *const yes[] = {"yes", "true", "on", "1"};
    static const char *const no[] = {"no", "false", "off", "0"};
    for (size_t i = 0; i < COUNT(yes); i++) {
        if (strcasecmp(s, yes[i]) == 0 || strcasecmp(s, no[i]) == 0) {
            *out = strcasecmp(s, yes[i]) == 0;
            return 0;
        }
    }
    return FERRY_EINVAL;
}

static void format_scaled(uint64_t v, const struct unit *units, size_t nunits, char *out, size_t n)
{
    for (size_t i = 0; v != 0 && i < nunits; i++) {
        if (v % units[i].scale == 0) {
            snprintf(out, n, "%llu%s", (unsigned long long)(v / units[i].scale), units[i].name);
            return;
        }
    }
    snprintf(out, n, "%llu", (unsigned long long)v);
}

void config_format_size(uint64_t bytes, char *out, size_t n)
{
    format_scaled(bytes, size_units, COUNT(size_units), out, n);
}

void config_format_duration(uint64_t ms, char *out, size_t n)
{
    format_scaled(ms, duration_units, COUNT(duration_units), out, n);
}

const char *config_shown(const char *s, char *buf)
{
    if (strlen(s) < CONFIG_SHOWN_MAX)
        return s;
    snprintf(buf, CONFIG_SHOWN_MAX, "%.*s...", CONFIG_SHOWN_MAX - 4, s);
    return buf;
}

/* ---- endpoints ---- */

int config_fail(char *why, size_t n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, n, fmt, ap);
    va_end(ap);
    return -1;
}

/* One DNS label: 1..63 letters, digits, '-' or '_', not starting or ending with '-'. */
static int label_ok(const char *s, size_t len)
{
    if (len == 0 || len > 63 || s[0] == '-' || s[len - 1] == '-')
        return 0;
    for (size_t i = 0; i < len; i++) {
        if (!isalnum((unsigned char)s[i]) && s[i] != '-' && s[i] != '_')
            return 0;
    }
    return 1;
}

static int host_name_ok(const char *host)
{
    if (strlen(host) > 253)
        return 0;
    for (const char *s = host;;) {
        const char *dot = strchr(s, '.');
        size_t len = dot ? (size_t)(dot - s) : strlen(s);
        if (!label_ok(s, len))
            return 0;
        if (dot == NULL)
            return 1;
        s = dot + 1;
    }
}

static int check_host(const char *host, int bracketed, char *why, size_t n)
{
    unsigned char addr[16];
    char shown[CONFIG_SHOWN_MAX];
    if (host[0] == '\0')
        return config_fail(why, n, "missing host (use 0.0.0.0 or [::] for every interface)");
    if (bracketed) {
        if (inet_pton(AF_INET6, host, addr) != 1)
            return config_fail(why, n, "'%s' is not an IPv6 address", config_shown(host, shown));
        return 0;
    }
    if (strspn(host, "0123456789.") == strlen(host)) {
        if (inet_pton(AF_INET, host, addr) != 1)
            return config_fail(why, n, "'%s' is not an IPv4 address", config_shown(host, shown));
        return 0;
    }
    if (!host_name_ok(host))
        return config_fail(why, n,
                           "'%s' is not a host name (letters, digits, '-', '_' and dots), "
                           "an IPv4 address or an [IPv6] address",
                           config_shown(host, shown));
    return 0;
}

static int parse_port(const char *s, uint16_t default_port, uint16_t *out, char *why, size_t n)
{
    char shown[CONFIG_SHOWN_MAX];
    uint64_t v;
    const char *p = s;
    if (s == NULL) {
        if (default_port == 0)
            return config_fail(why, n, "missing port (expected host:port)");
        *out = default_port;
        return 0;
    }
    if (parse_digits(&p, &v) != 0 || *p != '\0')
        return config_fail(why, n, "port '%s' is not a number from 1 to 65535",
                           config_shown(s, shown));
    if (v == 0 || v > 65535)
        return config_fail(why, n, "port %s is out of range (1 to 65535)", config_shown(s, shown));
    *out = (uint16_t)v;
    return 0;
}

/* Split s into host (copied) and port (NULL when absent); says whether the host was [bracketed]. */
static int split_host_port(const char *s, char *host, const char **port, int *bracketed, char *why,
                           size_t n)
{
    char shown[CONFIG_SHOWN_MAX];
    const char *start = s, *end, *rest;
    *bracketed = s[0] == '[';
    if (*bracketed) {
        start = s + 1;
        end = strchr(start, ']');
        if (end == NULL)
            return config_fail(why, n, "missing ']' after the IPv6 address");
        rest = end + 1;
        if (*rest != '\0' && *rest != ':')
            return config_fail(why, n, "unexpected '%s' after ']' (expected :port)",
                               config_shown(rest, shown));
    } else {
        end = strchr(s, ':');
        if (end != NULL && strchr(end + 1, ':') != NULL)
            return config_fail(why, n, "an IPv6 address must be in brackets, as in [::1]:7878");
        rest = end ? end : s + strlen(s);
        end = rest;
    }
    if ((size_t)(end - start) > CONFIG_HOST_MAX)
        return config_fail(why, n, "the host is longer than 255 bytes");
    memcpy(host, start, (size_t)(end - start));
    host[end - start] = '\0';
    *port = *rest == ':' ? rest + 1 : NULL;
    return 0;
}

int config_endpoint_parse(const char *s, uint16_t default_port, struct config_endpoint *out,
                          char *why, size_t n)
{
    struct config_endpoint ep;
    const char *port = NULL;
    int bracketed;
    memset(&ep, 0, sizeof ep);
    if (split_host_port(s, ep.host, &port, &bracketed, why, n) != 0 ||
        check_host(ep.host, bracketed, why, n) != 0 ||
        parse_port(port, default_port, &ep.port, why, n) != 0)
        return -1;
    *out = ep;
    return 0;
}

int config_parse_endpoint(const char *s, uint16_t default_port, struct config_endpoint *out)
{
    char why[CONFIG_WHY_MAX];
    return config_endpoint_parse(s, default_port, out, why, sizeof why) == 0 ? 0 : FERRY_EINVAL;
}

void config_format_endpoint(const struct config_endpoint *e, char *out, size_t n)
{
    if (e->port == 0)
        snprintf(out, n, "none");
    else if (strchr(e->host, ':') != NULL)
        snprintf(out, n, "[%s]:%u", e->host, (unsigned)e->port);
    else
        snprintf(out, n, "%s:%u", e->host, (unsigned)e->port);
}

/* ---- cluster membership ---- */

/* "[prio]" at *p, if any; *p moves past it. */
static int parse_priority(const char **p, uint32_t *prio, char *why, size_t n)
{
    uint64_t v;
    const char *s = *p + 1;
    *prio = 1;
    if (**p != '[')
        return 0;
    if (parse_digits(&s, &v) != 0 || *s != ']' || v > CONFIG_PRIORITY_MAX)
        return config_fail(why, n, "expected a priority from [0] to [%u] before the id",
                           CONFIG_PRIORITY_MAX);
    *prio = (uint32_t)v;
    *p = s + 1;
    return 0;
}

static int parse_id(const char **p, uint32_t *id, char *why, size_t n)
{
    uint64_t v;
    const char *s = *p;
    if (parse_digits(&s, &v) != 0 || *s != ':' || v == 0 || v > UINT32_MAX)
        return config_fail(why, n, "expected [priority]id:host:port with an id from 1 to %u",
                           UINT32_MAX);
    *id = (uint32_t)v;
    *p = s + 1;
    return 0;
}

static int parse_member(const char *entry, struct config_member *m, char *why, size_t n)
{
    const char *p = entry;
    memset(m, 0, sizeof *m);
    if (parse_priority(&p, &m->priority, why, n) != 0 || parse_id(&p, &m->id, why, n) != 0)
        return -1;
    return config_endpoint_parse(p, 0, &m->endpoint, why, n);
}

/* Copy the trimmed text between s and end into buf; -1 if it does not fit. */
static int trimmed_copy(const char *s, const char *end, char *buf, size_t cap)
{
    while (s < end && isspace((unsigned char)*s))
        s++;
    while (end > s && isspace((unsigned char)end[-1]))
        end--;
    if ((size_t)(end - s) >= cap)
        return -1;
    memcpy(buf, s, (size_t)(end - s));
    buf[end - s] = '\0';
    return 0;
}

static int entry_error(struct ferry_err *err, uint32_t i, const char *entry, const char *why)
{
    char shown[CONFIG_SHOWN_MAX];
    if (entry[0] == '\0')
        return ferry_err_set(err, FERRY_EINVAL,
                             "entry %u is empty (expected [priority]id:host:port, comma separated)",
                             i + 1);
    return ferry_err_set(err, FERRY_EINVAL, "entry %u '%s': %s", i + 1, config_shown(entry, shown),
                         why);
}

int config_parse_membership(const char *s, struct config_member *out, uint32_t max, uint32_t *count,
                            struct ferry_err *err)
{
    char entry[CONFIG_HOST_MAX + 64];
    char why[CONFIG_WHY_MAX];
    uint32_t i = 0;
    if (strcasecmp(s, "none") == 0) {
        *count = 0;
        return 0;
    }
    for (const char *p = s;; i++) {
        const char *comma = strchr(p, ',');
        const char *end = comma ? comma : p + strlen(p);
        if (i == max)
            return ferry_err_set(err, FERRY_EINVAL, "more than %u members", max);
        if (trimmed_copy(p, end, entry, sizeof entry) != 0)
            return ferry_err_set(err, FERRY_EINVAL, "entry %u is too long", i + 1);
        if (entry[0] == '\0' || parse_member(entry, &out[i], why, sizeof why) != 0)
            return entry_error(err, i, entry, why);
        if (comma == NULL)
            break;
        p = comma + 1;
    }
    if (config_members_check(out, i + 1, why, sizeof why) != 0)
        return ferry_err_set(err, FERRY_EINVAL, "%s", why);
    *count = i + 1;
    return 0;
}

static int same_endpoint(const struct config_endpoint *a, const struct config_endpoint *b)
{
    return a->port == b->port && strcasecmp(a->host, b->host) == 0;
}

int config_members_check(const struct config_member *m, uint32_t count, char *why, size_t n)
{
    char ep[CONFIG_HOST_MAX + 16];
    uint32_t voters = 0;
    for (uint32_t i = 0; i < count; i++) {
        if (m[i].id == 0)
            return config_fail(why, n, "member %u has id 0 (ids start at 1)", i + 1);
        voters += m[i].priority > 0;
        for (uint32_t j = 0; j < i; j++) {
            if (m[j].id == m[i].id)
                return config_fail(why, n, "member id %u appears twice (entries %u and %u)",
                                   m[i].id, j + 1, i + 1);
            if (same_endpoint(&m[j].endpoint, &m[i].endpoint)) {
                config_format_endpoint(&m[i].endpoint, ep, sizeof ep);
                return config_fail(why, n, "entries %u and %u have the same address %s", j + 1,
                                   i + 1, ep);
            }
        }
    }
    if (count > 0 && voters == 0)
        return config_fail(
            why, n, "every member is a witness ([0]); at least one needs a priority above 0");
    return 0;
}

void config_format_members(const struct config_member *m, uint32_t count, char *out, size_t n)
{
    char ep[CONFIG_HOST_MAX + 16];
    size_t used = 0;
    if (count == 0)
        snprintf(out, n, "none");
    for (uint32_t i = 0; i < count && used < n; i++) {
        config_format_endpoint(&m[i].endpoint, ep, sizeof ep);
        if (m[i].priority != 1)
            used += (size_t)snprintf(out + used, n - used, "%s[%u]%u:%s", i ? "," : "",
                                     m[i].priority, m[i].id, ep);
        else
            used += (size_t)snprintf(out + used, n - used, "%s%u:%s", i ? "," : "", m[i].id, ep);
    }
}
