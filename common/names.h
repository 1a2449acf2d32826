/*
 * The mesh's name rules, in one place: every module that checks a name uses these, so a
 * name one part accepts no other part refuses.
 *
 *   DNS label   namespaces, service names, registry names, resource names: RFC 1123, 1 to
 *               63 of [a-z0-9-], a letter or digit at both ends
 *   node name   an RFC 1123 subdomain, as Kubernetes node names are: 1 to 253 of
 *               [a-z0-9.-], a letter or digit at both ends
 *   host name   where an endpoint address may be a name to resolve: RFC 1123 host names,
 *               1 to 253 characters, labels of 1 to 63 [A-Za-z0-9-] with a letter or
 *               digit at both ends, one trailing '.' allowed; the last label is not all
 *               digits, so that no name reads as an IPv4 address
 *
 * The mesh_name_check_* functions have the shape of a config field's `.check`
 * (common/cfg.h): NULL when the name is valid, else why not (a constant string).
 */
#ifndef MESH_NAMES_H
#define MESH_NAMES_H

#include <stdbool.h>

#define MESH_NAME_DNS_LABEL_MAX 63
#define MESH_NAME_NODE_MAX 253

bool mesh_name_is_dns_label(const char *s);
bool mesh_name_is_node(const char *s);
bool mesh_name_is_host(const char *s);

const char *mesh_name_check_dns_label(const char *s);
const char *mesh_name_check_node(const char *s);
const char *mesh_name_check_host(const char *s);

#endif
