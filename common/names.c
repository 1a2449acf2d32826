#include "common/names.h"

#include <string.h>

static bool lower_alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

bool mesh_name_is_dns_label(const char *s)
{
    return mesh_name_check_dns_label(s) == NULL;
}

bool mesh_name_is_node(const char *s)
{
    return mesh_name_check_node(s) == NULL;
}

bool mesh_name_is_host(const char *s)
{
    return mesh_name_check_host(s) == NULL;
}

const char *mesh_name_check_dns_label(const char *s)
{
    size_t n = strlen(s);
    bool ok = n >= 1 && n <= MESH_NAME_DNS_LABEL_MAX && lower_alnum(s[0]) && lower_alnum(s[n - 1]);
    for (size_t i = 1; ok && i + 1 < n; i++)
        ok = lower_alnum(s[i]) || s[i] == '-';
    return ok ? NULL
              : "must be a DNS label: 1 to 63 lowercase letters, digits and '-', starting and "
                "ending with a letter or digit";
}

const char *mesh_name_check_node(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > MESH_NAME_NODE_MAX)
        return "must be 1 to 253 characters";
    for (size_t i = 0; i < n; i++) {
        if (!lower_alnum(s[i]) && s[i] != '-' && s[i] != '.')
            return "only lowercase letters, digits, '-' and '.' are allowed";
    }
    if (!lower_alnum(s[0]) || !lower_alnum(s[n - 1]))
        return "must start and end with a letter or digit";
    return NULL;
}

static bool alnum(char c)
{
    return lower_alnum(c) || (c >= 'A' && c <= 'Z');
}

const char *mesh_name_check_host(const char *s)
{
    size_t n = strlen(s);
    if (n && s[n - 1] == '.')
        n--; /* a fully qualified name */
    if (n == 0 || n > MESH_NAME_NODE_MAX)
        return "must be a host name of 1 to 253 characters";
    bool digits_only = true;
    for (size_t i = 0, start = 0; i <= n; i++) {
        if (i < n && s[i] != '.') {
            if (!alnum(s[i]) && s[i] != '-')
                return "must be a host name: only letters, digits, '-' and '.' are allowed";
            digits_only = digits_only && s[i] >= '0' && s[i] <= '9';
            continue;
        }
        size_t len = i - start;
        if (len == 0 || len > MESH_NAME_DNS_LABEL_MAX)
            return "must be a host name: each dot-separated label has 1 to 63 characters";
        if (!alnum(s[start]) || !alnum(s[i - 1]))
            return "must be a host name: each label starts and ends with a letter or digit";
        if (i == n && digits_only)
            return "must be a host name or an IP address: the last label is all digits";
        start = i + 1;
        digits_only = true;
    }
    return NULL;
}
