#include "common/strutil.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/macros.h"

size_t mesh_str_distance(const char *a, const char *b, size_t cap)
{
    /* Optimal string alignment distance: a swap of two neighbours counts as one edit. */
    size_t la = strlen(a), lb = strlen(b);
    size_t diff = la > lb ? la - lb : lb - la;
    if (diff > cap || la >= 64 || lb >= 64)
        return cap + 1;
    size_t d[64][64];
    for (size_t i = 0; i <= la; i++)
        d[i][0] = i;
    for (size_t j = 0; j <= lb; j++)
        d[0][j] = j;
    for (size_t i = 1; i <= la; i++) {
        for (size_t j = 1; j <= lb; j++) {
            size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
            size_t v = MESH_MIN(MESH_MIN(d[i - 1][j] + 1, d[i][j - 1] + 1), d[i - 1][j - 1] + cost);
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
                v = MESH_MIN(v, d[i - 2][j - 2] + 1);
            d[i][j] = v;
        }
    }
    return d[la][lb] > cap ? cap + 1 : d[la][lb];
}

const char *mesh_str_suggest(const char *word, const char *const *candidates)
{
    const char *best = NULL;
    size_t best_d = 3;
    size_t len = strlen(word);
    for (size_t i = 0; candidates[i]; i++) {
        /* A word that is the start of a key ("outbound" for "outbound_http") is a hint too. */
        if (len >= 3 && strncmp(candidates[i], word, len) == 0 && !best)
            best = candidates[i];
        size_t d = mesh_str_distance(word, candidates[i], 2);
        if (d < best_d && d * 2 < MESH_MAX(len, strlen(candidates[i]))) {
            best = candidates[i];
            best_d = d;
        }
    }
    return best;
}

int mesh_parse_u64(const char *s, size_t len, uint64_t *ret)
{
    uint64_t v = 0;
    if (len == 0)
        return -EINVAL;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -EINVAL;
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -ERANGE;
        v = v * 10 + d;
    }
    *ret = v;
    return 0;
}

int mesh_parse_duration_ms(const char *s, uint64_t *ret_ms)
{
    static const struct {
        const char *unit;
        uint64_t ms;
    } units[] = {{"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}};
    uint64_t total = 0;
    if (strcmp(s, "0") == 0) {
        *ret_ms = 0;
        return 0;
    }
    if (!*s)
        return -EINVAL;
    while (*s) {
        size_t nd = strspn(s, "0123456789");
        uint64_t v;
        if (mesh_parse_u64(s, nd, &v) < 0)
            return nd ? -ERANGE : -EINVAL;
        s += nd;
        size_t nu = strspn(s, "hms");
        size_t k;
        for (k = 0; k < MESH_ARRAY_SIZE(units); k++) {
            if (strlen(units[k].unit) == nu && strncmp(s, units[k].unit, nu) == 0)
                break;
        }
        if (k == MESH_ARRAY_SIZE(units))
            return -EINVAL;
        s += nu;
        if (v > (UINT64_MAX - total) / units[k].ms)
            return -ERANGE;
        total += v * units[k].ms;
    }
    *ret_ms = total;
    return 0;
}

void mesh_format_duration_ms(uint64_t ms, char *out, size_t n)
{
    if (ms == 0) {
        snprintf(out, n, "0s");
        return;
    }
    if (ms % 1000) {
        snprintf(out, n, "%llums", (unsigned long long)ms);
        return;
    }
    uint64_t s = ms / 1000;
    size_t k = 0;
    out[0] = '\0';
    if (s >= 3600 && k < n)
        k += (size_t)snprintf(out + k, n - k, "%lluh", (unsigned long long)(s / 3600));
    if (s % 3600 >= 60 && k < n)
        k += (size_t)snprintf(out + k, n - k, "%llum", (unsigned long long)(s % 3600 / 60));
    if (s % 60 && k < n)
        snprintf(out + k, n - k, "%llus", (unsigned long long)(s % 60));
}

bool mesh_is_token(const char *s, size_t max)
{
    size_t n = 0;
    for (; s[n]; n++) {
        if (s[n] <= 0x20 || s[n] >= 0x7f)
            return false;
    }
    return n > 0 && n <= max;
}

int mesh_str_ptr_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}
