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
