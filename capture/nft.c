#define MESH_LOG_MODULE "capture"

/*
 * The kernel side: libnftables runs each script as one netlink batch, which the kernel
 * applies whole or not at all (one transaction), and lists rulesets as JSON.
 */
#include <errno.h>
#include <linux/netlink.h>
#include <nftables/libnftables.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "capture/capture.h"
#include "common/alloc.h"

/* nft_ctx_free does not take NULL. */
static void ctx_free(struct nft_ctx *nft)
{
    if (nft)
        nft_ctx_free(nft);
}

/*
 * A context whose output and errors go to buffers; json: list in JSON.
 *
 * libnftables ends the whole process (exit(3), "Unable to initialize Netlink socket") when
 * it cannot open its netlink socket, as under systemd's RestrictAddressFamilies= without
 * AF_NETLINK: the socket is tried here first, and its failure is an error like any other.
 */
static struct nft_ctx *ctx_new(bool json, char *err, size_t n)
{
    int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
    if (fd < 0) {
        snprintf(err, n,
                 "cannot open a netlink socket for nftables: %s (the agent needs AF_NETLINK "
                 "and CAP_NET_ADMIN for capture, docs/capture.md)",
                 strerror(errno));
        return NULL;
    }
    close(fd);
    struct nft_ctx *nft = nft_ctx_new(NFT_CTX_DEFAULT);
    if (!nft) {
        snprintf(err, n, "cannot create a libnftables context");
        return NULL;
    }
    if (nft_ctx_buffer_output(nft) < 0 || nft_ctx_buffer_error(nft) < 0) {
        ctx_free(nft);
        snprintf(err, n, "cannot buffer libnftables output");
        return NULL;
    }
    nft_ctx_output_set_flags(nft, json ? NFT_CTX_OUTPUT_JSON | NFT_CTX_OUTPUT_HANDLE : 0);
    return nft;
}

/* nft's error text, one line ("Error: ... " with the offending command). */
static void nft_error(struct nft_ctx *nft, const char *what, char *err, size_t n)
{
    const char *e = nft_ctx_get_error_buffer(nft);
    char line[512];
    snprintf(line, sizeof(line), "%s", e && *e ? e : "no message");
    for (char *p = line; *p; p++) {
        if (*p == '\n')
            *p = ' ';
    }
    snprintf(err, n, "%s: %s (needs CAP_NET_ADMIN)", what, line);
}

/* Runs a script; 0 or -EINVAL with nft's message. */
static int run(struct nft_ctx *nft, const char *script, const char *what, char *err, size_t n)
{
    if (nft_run_cmd_from_buffer(nft, script) != 0) {
        nft_error(nft, what, err, n);
        return -EINVAL;
    }
    return 0;
}

/* The JSON of a listing ("list ruleset", "list table inet x"); NULL with err set. */
static json_t *list_json(struct nft_ctx *nft, const char *cmd, char *err, size_t n)
{
    if (run(nft, cmd, cmd, err, n) < 0)
        return NULL;
    json_error_t je;
    json_t *j = json_loads(nft_ctx_get_output_buffer(nft), 0, &je);
    if (!j)
        snprintf(err, n, "%s: cannot read libnftables' JSON: %s", cmd, je.text);
    return j;
}

int mesh_capture_install(const struct mesh_capture_spec *s, char *err, size_t n)
{
    struct mesh_buf script;
    mesh_buf_init(&script, MESH_BUF_UNLIMITED);
    int r = mesh_capture_script(s, &script, err, n);
    if (r < 0)
        goto out;
    struct nft_ctx *nft = ctx_new(true, err, n);
    if (!nft) {
        r = -EIO;
        goto out;
    }
    json_t *rules = list_json(nft, "list ruleset", err, n);
    if (!rules) {
        r = -EIO;
    } else if ((r = mesh_capture_conflicts(rules, s, err, n)) != 0) {
        r = r > 0 ? -EEXIST : r;
    } else {
        nft_ctx_output_set_flags(nft, 0);
        r = run(nft, script.data, "installing the capture rules", err, n);
    }
    json_decref(rules);
    ctx_free(nft);
out:
    mesh_buf_done(&script);
    return r;
}

int mesh_capture_update_dests(const struct mesh_capture_spec *s, char *err, size_t n)
{
    struct mesh_buf script;
    mesh_buf_init(&script, MESH_BUF_UNLIMITED);
    int r = mesh_capture_dests_script(s, &script, err, n);
    if (r == 0) {
        struct nft_ctx *nft = ctx_new(false, err, n);
        r = nft ? run(nft, script.data, "updating the captured endpoints", err, n) : -EIO;
        ctx_free(nft);
    }
    mesh_buf_done(&script);
    return r;
}

/* Whether chain `name` is in a listing of the table. */
static bool has_chain(const json_t *table, const char *name)
{
    size_t i;
    json_t *item;
    json_array_foreach(json_object_get(table, "nftables"), i, item)
    {
        const json_t *c = json_object_get(item, "chain");
        if (c && json_is_string(json_object_get(c, "name")) &&
            strcmp(json_string_value(json_object_get(c, "name")), name) == 0)
            return true;
    }
    return false;
}

/*
 * The items of our table in the ruleset ({"nftables": [...]}, empty when there is no such
 * table); NULL with err set when the ruleset cannot be listed. The whole ruleset is listed
 * so that "no such table" is not an error and a refusal (no privileges) is one.
 */
static json_t *own_items(struct nft_ctx *nft, const char *table, char *err, size_t n)
{
    json_t *all = list_json(nft, "list ruleset", err, n);
    if (!all)
        return NULL;
    json_t *mine = json_pack("{s:[]}", "nftables");
    size_t i;
    json_t *item;
    json_array_foreach(json_object_get(all, "nftables"), i, item)
    {
        static const char *const keys[] = {"table", "chain", "rule", "set"};
        for (size_t k = 0; mine && k < 4; k++) {
            const json_t *o = json_object_get(item, keys[k]);
            const char *tn = json_string_value(json_object_get(o, k == 0 ? "name" : "table"));
            const char *fam = json_string_value(json_object_get(o, "family"));
            if (o && tn && fam && !strcmp(tn, table) && !strcmp(fam, "inet"))
                json_array_append(json_object_get(mine, "nftables"), item);
        }
    }
    json_decref(all);
    if (!mine)
        snprintf(err, n, "out of memory");
    return mine;
}

/* Whether `table` is no table name (err says why). */
static bool bad_table(const char *table, char *err, size_t n)
{
    const char *why = mesh_capture_check_table(table);
    if (why)
        snprintf(err, n, "table name '%s' %s", table ? table : "", why);
    return why != NULL;
}

int mesh_capture_remove(const char *table, unsigned parts, char *err, size_t n)
{
    if (bad_table(table, err, n))
        return -EINVAL;
    struct nft_ctx *nft = ctx_new(true, err, n);
    if (!nft)
        return -EIO;
    int r = 0;
    json_t *t = own_items(nft, table, err, n);
    if (!t) {
        ctx_free(nft);
        return -EIO;
    }
    bool exists = json_array_size(json_object_get(t, "nftables")) > 0;
    bool out = has_chain(t, MESH_CAPTURE_CHAIN_OUT), in = has_chain(t, MESH_CAPTURE_CHAIN_IN);
    bool pods = has_chain(t, MESH_CAPTURE_CHAIN_PODS);
    bool rm_out = out && (parts & MESH_CAPTURE_OUTBOUND),
         rm_in = in && (parts & MESH_CAPTURE_INBOUND),
         rm_pods = pods && (parts & MESH_CAPTURE_OUTBOUND);
    struct mesh_buf script;
    mesh_buf_init(&script, MESH_BUF_UNLIMITED);
    if (exists &&
        (parts == MESH_CAPTURE_ALL || (out == rm_out && in == rm_in && pods == rm_pods))) {
        mesh_buf_appendf(&script, "delete table inet %s\n", table);
    } else {
        if (rm_out)
            mesh_buf_appendf(&script, "delete chain inet %s %s\n", table, MESH_CAPTURE_CHAIN_OUT);
        if (rm_in)
            mesh_buf_appendf(&script, "delete chain inet %s %s\n", table, MESH_CAPTURE_CHAIN_IN);
        if (rm_pods)
            mesh_buf_appendf(&script, "delete chain inet %s %s\n", table, MESH_CAPTURE_CHAIN_PODS);
    }
    if (script.err)
        r = -ENOMEM;
    else if (script.len) {
        nft_ctx_output_set_flags(nft, 0);
        r = run(nft, script.data, "removing the capture rules", err, n);
    }
    mesh_buf_done(&script);
    json_decref(t);
    ctx_free(nft);
    return r;
}

/* The status object of a table listing. */
static json_t *summarize(const char *table, const json_t *listing)
{
    json_t *chains = json_array(), *sets = json_object();
    size_t i;
    json_t *item;
    json_array_foreach(json_object_get(listing, "nftables"), i, item)
    {
        const json_t *c = json_object_get(item, "chain");
        if (c) {
            json_t *o = json_pack("{s:s, s:s, s:i}", "name",
                                  json_string_value(json_object_get(c, "name")), "hook",
                                  json_is_string(json_object_get(c, "hook"))
                                      ? json_string_value(json_object_get(c, "hook"))
                                      : "",
                                  "rules", 0);
            if (o)
                json_array_append_new(chains, o);
        }
        const json_t *st = json_object_get(item, "set");
        if (st && json_is_string(json_object_get(st, "name")))
            json_object_set_new(
                sets, json_string_value(json_object_get(st, "name")),
                json_integer((json_int_t)json_array_size(json_object_get(st, "elem"))));
        const json_t *r = json_object_get(item, "rule");
        const char *cn = r ? json_string_value(json_object_get(r, "chain")) : NULL;
        size_t k;
        json_t *ch;
        json_array_foreach(chains, k, ch)
        {
            if (cn && strcmp(json_string_value(json_object_get(ch, "name")), cn) == 0)
                json_object_set_new(
                    ch, "rules",
                    json_integer(json_integer_value(json_object_get(ch, "rules")) + 1));
        }
    }
    char name[64];
    snprintf(name, sizeof(name), "inet %s", table);
    return json_pack("{s:b, s:s, s:o, s:o}", "installed", json_array_size(chains) > 0, "table",
                     name, "chains", chains, "sets", sets);
}

int mesh_capture_status(const char *table, json_t **ret, struct mesh_buf *text, char *err, size_t n)
{
    if (bad_table(table, err, n))
        return -EINVAL;
    struct nft_ctx *nft = ctx_new(true, err, n);
    if (!nft)
        return -EIO;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "list table inet %s", table);
    json_t *mine = own_items(nft, table, err, n);
    int r = 0;
    if (!mine) {
        ctx_free(nft);
        return -EIO;
    }
    *ret = summarize(table, mine);
    if (!*ret)
        r = -ENOMEM;
    if (r == 0 && text && json_is_true(json_object_get(*ret, "installed"))) {
        nft_ctx_output_set_flags(nft, 0);
        if (run(nft, cmd, cmd, err, n) == 0)
            mesh_buf_append_str(text, nft_ctx_get_output_buffer(nft));
    }
    json_decref(mine);
    ctx_free(nft);
    return r;
}
