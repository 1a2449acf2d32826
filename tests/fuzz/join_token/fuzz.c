/*
 * Fuzzes the join-token check: what an enrolling agent sends ("<token>\0<node>"). A store
 * with one token is made once in a temporary directory; no guess may pass, and the known
 * token must not pass for a node outside its pattern.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "common/alloc.h"
#include "controller/store.h"
#include "controller/tokens.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct mesh_store *store;
static char *known;
static char dir[] = "/tmp/mesh-fuzz-token-XXXXXX";

/* Leaves nothing behind in /tmp. */
static void cleanup(void)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
}

static void setup(void)
{
    static const char *const kinds[] = {"tokens", NULL};
    if (!mkdtemp(dir) || mesh_store_open(dir, kinds, &store) < 0)
        abort();
    atexit(cleanup);
    json_t *req = json_pack("{s:s, s:[s], s:i}", "node", "web-*", "services",
                            "spiffe://mesh.local/ns/shop/*", "uses", 10000);
    char err[256];
    json_t *rec = mesh_token_create(store, "mesh.local", req, &known, err, sizeof(err));
    if (!rec) {
        fprintf(stderr, "cannot make a token: %s\n", err);
        abort();
    }
    json_decref(rec);
    json_decref(req);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!store)
        setup();
    char *in = malloc(size + 2);
    if (!in)
        return 0;
    memcpy(in, data, size);
    in[size] = '\0';
    in[size + 1] = '\0';
    const char *token = in;
    const char *node = in + strlen(in) + 1;
    if ((size_t)(node - in) > size)
        node = "web-1";
    char err[300];
    json_t *rec = mesh_token_use(store, token, node, err, sizeof(err));
    bool is_known = strcmp(token, known) == 0;
    bool node_ok = strncmp(node, "web-", 4) == 0;
    if (rec && !(is_known && node_ok))
        abort(); /* a forged token, or the right one for another node */
    if (!rec && !err[0])
        abort(); /* a refusal always says why */
    free(in);
    return 0;
}
