#define MESH_LOG_MODULE "capture"

/*
 * What in a ruleset would fight with the capture rules, read from libnftables' JSON
 * (`nft -j list ruleset`, json_schema_version 1): another mesh's tables and chains, and
 * NAT or TPROXY rules on the TCP the capture rules redirect. Rules in a chain without a
 * hook count for both directions: a jump from anywhere may reach them.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "capture/capture.h"

/* Prefixes of other meshes' chains (iptables-nft keeps iptables' names). */
static const char *const foreign_chains[] = {"ISTIO_", "PROXY_INIT_", "CNI_", NULL};
/* Words in other meshes' table names. */
static const char *const foreign_tables[] = {"istio", "linkerd", "kuma", "consul_connect", NULL};

static const char *str(const json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}

static bool has_prefix(const char *s, const char *const *prefixes)
{
    for (size_t i = 0; prefixes[i]; i++) {
        if (strncmp(s, prefixes[i], strlen(prefixes[i])) == 0)
            return true;
    }
    return false;
}

static bool has_word(const char *s, const char *const *words)
{
    for (size_t i = 0; words[i]; i++) {
        if (strcasestr(s, words[i]))
            return true;
    }
    return false;
}

static bool own(const json_t *o, const struct mesh_capture_spec *s)
{
    return strcmp(str(o, "family"), "inet") == 0 && strcmp(str(o, "table"), s->table) == 0;
}

/* The hook of chain `name` in `table` of `family`, "" for a chain without one. */
static const char *chain_hook(const json_t *list, const char *family, const char *table,
                              const char *name)
{
    size_t i;
    json_t *item;
    json_array_foreach(list, i, item)
    {
        const json_t *c = json_object_get(item, "chain");
        if (c && strcmp(str(c, "family"), family) == 0 && strcmp(str(c, "table"), table) == 0 &&
            strcmp(str(c, "name"), name) == 0)
            return str(c, "hook");
    }
    return "";
}

/* What the rule does to the packet, if it rewrites where it goes: "redirect", "dnat",
 * "tproxy", or an iptables-nft target of the same kind; NULL otherwise. */
static const char *nat_verdict(const json_t *expr)
{
    size_t i;
    json_t *e;
    json_array_foreach(expr, i, e)
    {
        static const char *const natives[] = {"redirect", "dnat", "tproxy"};
        for (size_t k = 0; k < 3; k++) {
            if (json_object_get(e, natives[k]))
                return natives[k];
        }
        const json_t *xt = json_object_get(e, "xt");
        const char *name = xt ? str(xt, "name") : "";
        if (!strcmp(name, "REDIRECT") || !strcmp(name, "DNAT") || !strcmp(name, "TPROXY"))
            return name;
    }
    return NULL;
}

/* Whether a match's left side names the L4 protocol or a TCP/transport dport. */
static bool is_proto_key(const json_t *left)
{
    const json_t *meta = json_object_get(left, "meta");
    if (meta && (!strcmp(str(meta, "key"), "l4proto") || !strcmp(str(meta, "key"), "protocol")))
        return true;
    const json_t *pl = json_object_get(left, "payload");
    return pl && (!strcmp(str(pl, "field"), "protocol") || !strcmp(str(pl, "field"), "nexthdr"));
}

static bool is_dport(const json_t *left, const char **ret_proto)
{
    const json_t *pl = json_object_get(left, "payload");
    if (!pl || strcmp(str(pl, "field"), "dport") != 0)
        return false;
    *ret_proto = str(pl, "protocol");
    return true;
}

/* Whether one direction of `s` captures TCP port p. */
static bool captures_port(const struct mesh_capture_spec *s, bool outbound, long long p)
{
    if (!outbound) {
        for (size_t i = 0; i < s->n_inbound_ports; i++) {
            if (s->inbound_ports[i] == p)
                return true;
        }
        return false;
    }
    /* All traffic, or address ranges, on any port. */
    if ((s->outbound_all || s->n_include_cidrs) && !s->n_include_ports)
        return true;
    for (size_t i = 0; i < s->n_include_ports; i++) {
        if (s->include_ports[i] == p)
            return true;
    }
    for (size_t i = 0; i < s->n_dests; i++) {
        if (s->dests[i].port == p)
            return true;
    }
    return false;
}

/* Whether a match's right side (a number, a set, a range) holds a port `s` captures. */
static bool overlaps(const json_t *right, const struct mesh_capture_spec *s, bool outbound)
{
    if (json_is_integer(right))
        return captures_port(s, outbound, json_integer_value(right));
    const json_t *range = json_object_get(right, "range");
    if (json_is_array(range) && json_array_size(range) == 2) {
        long long lo = json_integer_value(json_array_get(range, 0));
        long long hi = json_integer_value(json_array_get(range, 1));
        if (hi - lo > 65535)
            return true;
        for (long long p = lo; p <= hi; p++) {
            if (captures_port(s, outbound, p))
                return true;
        }
        return false;
    }
    const json_t *set = json_is_array(right) ? right : json_object_get(right, "set");
    if (json_is_array(set)) {
        size_t i;
        json_t *v;
        json_array_foreach(set, i, v)
        {
            if (overlaps(v, s, outbound))
                return true;
        }
        return false;
    }
    return true; /* a named set or something else: cannot tell, so it may */
}

/*
 * Whether the rule's matches leave out the TCP `s` captures in one direction: it matches
 * another protocol, or TCP destination ports none of which are captured. Anything it cannot
 * read counts as a match (a conflict).
 */
static bool leaves_out(const json_t *expr, const struct mesh_capture_spec *s, bool outbound)
{
    size_t i;
    json_t *e;
    json_array_foreach(expr, i, e)
    {
        const json_t *m = json_object_get(e, "match");
        if (!m)
            continue;
        const json_t *left = json_object_get(m, "left"), *right = json_object_get(m, "right");
        const char *op = str(m, "op");
        const char *proto = "";
        if (is_proto_key(left) && !strcmp(op, "==") && json_is_string(right) &&
            strcmp(json_string_value(right), "tcp") != 0)
            return true; /* udp, icmp... */
        if (is_dport(left, &proto) && !strcmp(op, "==")) {
            if (proto[0] && strcmp(proto, "tcp") != 0 && strcmp(proto, "th") != 0)
                return true;
            return !overlaps(right, s, outbound);
        }
    }
    return false;
}

static void describe_rule(const json_t *rule, char *out, size_t n)
{
    snprintf(out, n, "table %s %s chain %s rule handle %lld", str(rule, "family"),
             str(rule, "table"), str(rule, "chain"),
             (long long)json_integer_value(json_object_get(rule, "handle")));
}

int mesh_capture_conflicts(const json_t *ruleset, const struct mesh_capture_spec *s, char *err,
                           size_t n)
{
    const json_t *list = json_object_get(ruleset, "nftables");
    if (!json_is_array(list)) {
        snprintf(err, n, "the ruleset is not libnftables JSON (no \"nftables\" array)");
        return -EINVAL;
    }
    size_t i;
    json_t *item;
    json_array_foreach(list, i, item)
    {
        const json_t *t = json_object_get(item, "table");
        if (t &&
            !(strcmp(str(t, "family"), "inet") == 0 && strcmp(str(t, "name"), s->table) == 0) &&
            has_word(str(t, "name"), foreign_tables)) {
            snprintf(err, n, "table %s %s belongs to another mesh; remove it first",
                     str(t, "family"), str(t, "name"));
            return 1;
        }
        const json_t *c = json_object_get(item, "chain");
        if (c && !own(c, s) && has_prefix(str(c, "name"), foreign_chains)) {
            snprintf(err, n,
                     "chain %s in table %s %s belongs to another mesh (Istio or Linkerd "
                     "capture); remove it first",
                     str(c, "name"), str(c, "family"), str(c, "table"));
            return 1;
        }
        const json_t *r = json_object_get(item, "rule");
        if (!r || own(r, s))
            continue;
        const json_t *expr = json_object_get(r, "expr");
        const char *verdict = nat_verdict(expr);
        if (!verdict)
            continue;
        const char *hook = chain_hook(list, str(r, "family"), str(r, "table"), str(r, "chain"));
        bool reaches_out = !hook[0] || !strcmp(hook, "output");
        bool reaches_in = !hook[0] || !strcmp(hook, "prerouting");
        bool out = s->outbound && reaches_out && !leaves_out(expr, s, true);
        bool in = s->inbound && reaches_in && !leaves_out(expr, s, false);
        if (out || in) {
            char where[300];
            describe_rule(r, where, sizeof(where));
            snprintf(err, n,
                     "%s (%s) rewrites the destination of %s TCP that capture redirects; "
                     "remove it, or exclude that traffic from capture",
                     where, verdict, out ? "outbound" : "inbound");
            return 1;
        }
    }
    return 0;
}
