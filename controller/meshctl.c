/*
 * meshctl: the operator's command line for mesh-controller. See meshctl(1).
 *
 * Talks HTTPS to the controller's API (libcurl), trusting the mesh's CA; admin calls carry
 * the admin token. Human tables by default, JSON with -o json; errors on stderr.
 */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <curl/curl.h>
#include <jansson.h>

#include "controller/meshctl-int.h"
#include "mesh-version.h"

#define EXIT_FAIL 1
#define EXIT_USAGE 2

struct opts {
    const char *server;
    const char *ca;
    char token[128];
    int json;
};

static void usage(FILE *out)
{
    fprintf(
        out,
        "Usage: meshctl [OPTIONS] COMMAND\n"
        "\n"
        "Commands:\n"
        "  apply -f FILE|-         create or replace resources (one, or {\"resources\": [...]})\n"
        "  get KIND [NAME] [-n NAMESPACE]\n"
        "                          resources: DestinationPolicy, Route, AuthorizationPolicy\n"
        "  delete KIND NAME [-n NAMESPACE]\n"
        "                          delete a resource (namespace default: default)\n"
        "  token create --node PATTERN --services PATTERN[,PATTERN...] [--ttl DURATION]\n"
        "               [--uses N] [--addresses IP|CIDR[,...]] [--description TEXT]\n"
        "                          a join token for agents to enroll with (shown once);\n"
        "                          --node '*' for any node name; --addresses: what its\n"
        "                          nodes may report besides the address they connect from\n"
        "  token list              the join tokens (never their secrets)\n"
        "  token revoke ID         revoke a join token\n"
        "  certs                   the certificates issued, latest per identity\n"
        "  node reset NAME         forget a node's certificates: they no longer speak for it,\n"
        "                          and a join token may enroll the name anew (a reinstalled\n"
        "                          host, a stolen one)\n"
        "  node set-services NAME PATTERN...\n"
        "                          the service identities (SPIFFE ID patterns) an enrolled\n"
        "                          node may get from its next signing request on, replacing\n"
        "                          what its join token allowed\n"
        "  status                  the agents: SYNCED, STALE or OFFLINE, config index,\n"
        "                          oldest certificate expiry (also: agents)\n"
        "  vm bootstrap --node NAME [--services PATTERN,...] (--out DIR | --tarball FILE)\n"
        "                          what a new VM needs to join: a join token, the trust\n"
        "                          bundle, agent.json (see meshctl vm bootstrap --help)\n"
        "\n"
        "Options:\n"
        "  -s, --server URL        the controller (default $MESH_CONTROLLER_ADDR or\n"
        "                          https://127.0.0.1:15443)\n"
        "      --ca FILE           the mesh CA to trust it with (default\n"
        "                          $MESH_CONTROLLER_CACERT or /var/lib/mesh-controller/ca.crt)\n"
        "      --token-file FILE   the admin token (default $MESH_CONTROLLER_TOKEN, else\n"
        "                          $MESH_CONTROLLER_TOKEN_FILE or\n"
        "                          /var/lib/mesh-controller/admin.token)\n"
        "  -o, --output FMT        table (default) or json\n"
        "  -h, --help              show this help and exit\n"
        "  -V, --version           show the version and exit\n"
        "\n"
        "Exit status: 0 success, 1 refused or failed, 2 usage error.\n");
}

static int read_token(const char *path, char *out, size_t size)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -errno;
    size_t n = fread(out, 1, size - 1, f);
    fclose(f);
    out[n] = '\0';
    while (n && (out[n - 1] == '\n' || out[n - 1] == '\r' || out[n - 1] == ' '))
        out[--n] = '\0';
    return n ? 0 : -EINVAL;
}

/* One call; returns the JSON answer (or NULL, said on stderr) and the status. */
static json_t *call(const struct opts *o, const char *method, const char *path, json_t *body,
                    const char *raw, long *status)
{
    struct mesh_ctl_conn c = {o->server, o->ca, o->token, o->json};
    char *text = body ? json_dumps(body, JSON_COMPACT) : raw ? strdup(raw) : NULL;
    if ((body || raw) && !text) {
        fprintf(stderr, "meshctl: out of memory\n");
        return NULL;
    }
    char err[CURL_ERROR_SIZE + 32];
    char *out = mesh_ctl__fetch(&c, method, path, text, status, err, sizeof(err));
    json_t *doc = NULL;
    if (!out) {
        fprintf(stderr, "meshctl: %s%s: %s\n", o->server, path, err);
    } else {
        doc = json_loads(out, 0, NULL);
        if (!doc)
            fprintf(stderr, "meshctl: %s%s: HTTP %ld without a JSON answer\n", o->server, path,
                    *status);
        else if (*status >= 300) {
            const char *e = json_string_value(json_object_get(doc, "error"));
            fprintf(stderr, "meshctl: %s (HTTP %ld)\n", e ? e : "refused", *status);
            size_t i;
            json_t *v;
            json_array_foreach(json_object_get(doc, "errors"), i, v)
                fprintf(stderr, "  %s\n", json_string_value(v));
        }
    }
    free(out);
    free(text);
    return doc;
}

static void print_json(json_t *doc)
{
    char *s = json_dumps(doc, JSON_INDENT(2));
    if (s)
        printf("%s\n", s);
    free(s);
}

static void when(json_int_t t, char *out, size_t n)
{
    time_t s = (time_t)t;
    struct tm tm;
    gmtime_r(&s, &tm);
    strftime(out, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void join(json_t *a, char *out, size_t n)
{
    size_t off = 0;
    size_t i;
    json_t *v;
    out[0] = '\0';
    json_array_foreach(a, i, v)
    {
        if (off < n)
            off += (size_t)snprintf(out + off, n - off, "%s%s", i ? "," : "",
                                    json_string_value(v) ? json_string_value(v) : "?");
    }
}

static int show(const struct opts *o, json_t *doc, const char *what)
{
    if (o->json) {
        print_json(doc);
        return 0;
    }
    json_t *list = json_object_get(doc, what);
    size_t i;
    json_t *v;
    char t1[32], services[512];
    if (strcmp(what, "tokens") == 0) {
        printf("%-18s %-14s %-6s %-8s %-21s %s\n", "ID", "NODE", "USES", "STATE", "EXPIRES",
               "SERVICES");
        json_array_foreach(list, i, v)
        {
            json_int_t exp = json_integer_value(json_object_get(v, "expires_at"));
            const char *state = json_is_true(json_object_get(v, "revoked")) ? "revoked"
                                : exp <= (json_int_t)time(NULL)             ? "expired"
                                : json_integer_value(json_object_get(v, "uses_left")) <= 0
                                    ? "used"
                                    : "valid";
            when(exp, t1, sizeof(t1));
            join(json_object_get(v, "services"), services, sizeof(services));
            printf("%-18s %-14s %lld/%-4lld %-8s %-21s %s\n",
                   json_string_value(json_object_get(v, "id")),
                   json_string_value(json_object_get(v, "node")),
                   (long long)json_integer_value(json_object_get(v, "uses_left")),
                   (long long)json_integer_value(json_object_get(v, "uses")), state, t1, services);
        }
    } else if (strcmp(what, "certs") == 0) {
        printf("%-48s %-14s %-21s %s\n", "IDENTITY", "NODE", "EXPIRES", "SERIAL");
        json_array_foreach(list, i, v)
        {
            when(json_integer_value(json_object_get(v, "not_after")), t1, sizeof(t1));
            printf("%-48s %-14s %-21s %s\n", json_string_value(json_object_get(v, "identity")),
                   json_string_value(json_object_get(v, "node")), t1,
                   json_string_value(json_object_get(v, "serial")));
        }
    } else {
        printf("%-16s %-8s %-8s %-7s %-16s %-21s %s\n", "NODE", "STATE", "VERSION", "CONFIG",
               "ADDRESS", "OLDEST CERT EXPIRY", "LAST REPORT");
        json_int_t current = json_integer_value(json_object_get(doc, "config_index"));
        json_array_foreach(list, i, v)
        {
            json_t *exp = json_object_get(v, "oldest_cert_expiry");
            json_t *last = json_object_get(v, "last_report_s");
            json_t *addr = json_object_get(v, "address");
            json_t *ver = json_object_get(v, "version");
            char config[32], seen[32];
            if (exp)
                when(json_integer_value(exp), t1, sizeof(t1));
            snprintf(config, sizeof(config), "%lld/%lld",
                     (long long)json_integer_value(json_object_get(v, "config_index")),
                     (long long)current);
            snprintf(seen, sizeof(seen), last ? "%llds ago" : "never",
                     (long long)json_integer_value(last));
            printf("%-16s %-8s %-8s %-7s %-16s %-21s %s\n",
                   json_string_value(json_object_get(v, "node")),
                   json_string_value(json_object_get(v, "state")),
                   ver ? json_string_value(ver) : "-", config, addr ? json_string_value(addr) : "-",
                   exp ? t1 : "-", seen);
        }
    }
    return 0;
}

/* Runs a call and shows its answer; the exit status. */
static int run(const struct opts *o, const char *method, const char *path, json_t *body,
               const char *what)
{
    long status = 0;
    json_t *doc = call(o, method, path, body, NULL, &status);
    json_decref(body);
    if (!doc || status >= 300) {
        json_decref(doc);
        return EXIT_FAIL;
    }
    int r = 0;
    if (what) {
        r = show(o, doc, what);
    } else if (o->json) {
        print_json(doc);
    } else if (json_object_get(doc, "token")) {
        printf(
            "join token %s (shown once; give it to the agents as identity.join_token_file):\n%s\n",
            json_string_value(json_object_get(doc, "id")),
            json_string_value(json_object_get(doc, "token")));
    } else if (json_object_get(doc, "reset")) {
        printf("reset node %s: enroll it again with a join token\n",
               json_string_value(json_object_get(doc, "node")));
    } else {
        printf("revoked %s\n", json_string_value(json_object_get(doc, "id")));
    }
    json_decref(doc);
    return r;
}

static char *read_all(const char *path)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
    if (!f)
        return NULL;
    size_t len = 0, cap = 65536;
    char *data = malloc(cap + 1);
    size_t n;
    while (data && (n = fread(data + len, 1, cap - len, f)) > 0) {
        len += n;
        if (len == cap && len < 64 * 1024 * 1024) {
            char *d = realloc(data, cap * 2 + 1);
            if (!d) {
                free(data);
                data = NULL;
                break;
            }
            data = d;
            cap *= 2;
        }
    }
    if (f != stdin)
        fclose(f);
    if (data)
        data[len] = '\0';
    return data;
}

static int apply(const struct opts *o, int argc, char **argv)
{
    if (argc != 3 || strcmp(argv[1], "-f") != 0) {
        fprintf(stderr, "meshctl: apply -f FILE (or - for standard input)\n");
        return EXIT_USAGE;
    }
    char *text = read_all(argv[2]);
    if (!text) {
        fprintf(stderr, "meshctl: cannot read '%s': %s\n", argv[2], strerror(errno));
        return EXIT_FAIL;
    }
    long status = 0;
    json_t *doc = call(o, "PUT", "/v1/resources", NULL, text, &status);
    free(text);
    if (!doc || status >= 300) {
        json_decref(doc);
        return EXIT_FAIL;
    }
    if (o->json) {
        print_json(doc);
    } else {
        size_t i;
        json_t *v;
        json_array_foreach(json_object_get(doc, "applied"), i, v)
            printf("applied %s\n", json_string_value(v));
        printf("index %lld\n", (long long)json_integer_value(json_object_get(doc, "index")));
    }
    json_decref(doc);
    return 0;
}

/* get KIND [NAME] [-n NS] and delete KIND NAME [-n NS]. */
static int resources(const struct opts *o, int argc, char **argv, bool del)
{
    const char *ns = NULL, *kind = NULL, *name = NULL;
    for (int i = 1; i < argc; i++) {
        if ((strcmp(argv[i], "-n") == 0 || strcmp(argv[i], "--namespace") == 0) && i + 1 < argc)
            ns = argv[++i];
        else if (!kind)
            kind = argv[i];
        else if (!name)
            name = argv[i];
        else
            kind = NULL, i = argc; /* too many */
    }
    if (!kind || (del && !name)) {
        fprintf(stderr, "meshctl: %s\n",
                del ? "delete KIND NAME [-n NAMESPACE]" : "get KIND [NAME] [-n NAMESPACE]");
        return EXIT_USAGE;
    }
    if (del) {
        char path[600];
        snprintf(path, sizeof(path), "/v1/resources/%s/%s/%s", kind, ns ? ns : "default", name);
        long status = 0;
        json_t *doc = call(o, "DELETE", path, NULL, NULL, &status);
        int r = doc && status < 300 ? 0 : EXIT_FAIL;
        if (r == 0 && o->json)
            print_json(doc);
        else if (r == 0)
            printf("deleted %s\n", json_string_value(json_object_get(doc, "deleted")));
        json_decref(doc);
        return r;
    }
    long status = 0;
    json_t *doc = call(o, "GET", "/v1/resources", NULL, NULL, &status);
    if (!doc || status >= 300) {
        json_decref(doc);
        return EXIT_FAIL;
    }
    json_t *out = json_array();
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(doc, "resources"), i, v)
    {
        const char *k = json_string_value(json_object_get(v, "kind"));
        const char *n = json_string_value(json_object_get(v, "name"));
        const char *s = json_string_value(json_object_get(v, "namespace"));
        if (k && strcasecmp(k, kind) == 0 && (!name || (n && strcmp(n, name) == 0)) &&
            (!ns || (s && strcmp(s, ns) == 0)))
            json_array_append(out, v);
    }
    int r = 0;
    if (name && json_array_size(out) == 0) {
        fprintf(stderr, "meshctl: no %s named %s\n", kind, name);
        r = EXIT_FAIL;
    } else if (o->json) {
        print_json(name ? json_array_get(out, 0) : out);
    } else {
        printf("%-22s %-40s\n", "KIND", "NAMESPACE/NAME");
        json_array_foreach(out, i, v)
            printf("%-22s %s/%s\n", json_string_value(json_object_get(v, "kind")),
                   json_string_value(json_object_get(v, "namespace")),
                   json_string_value(json_object_get(v, "name")));
        printf("(index %lld)\n", (long long)json_integer_value(json_object_get(doc, "index")));
    }
    json_decref(out);
    json_decref(doc);
    return r;
}

static int token_create(const struct opts *o, int argc, char **argv)
{
    static const struct option lo[] = {{"services", required_argument, NULL, 's'},
                                       {"node", required_argument, NULL, 'n'},
                                       {"ttl", required_argument, NULL, 't'},
                                       {"uses", required_argument, NULL, 'u'},
                                       {"description", required_argument, NULL, 'd'},
                                       {"addresses", required_argument, NULL, 'a'},
                                       {NULL, 0, NULL, 0}};
    json_t *req = json_object(), *services = json_array();
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "s:n:t:u:d:a:", lo, NULL)) != -1) {
        switch (ch) {
        case 's':
        case 'a': {
            json_t *list = ch == 's' ? services : json_array();
            char *copy = strdup(optarg), *save = NULL;
            for (char *p = strtok_r(copy, ",", &save); p; p = strtok_r(NULL, ",", &save))
                json_array_append_new(list, json_string(p));
            free(copy);
            if (ch == 'a')
                json_object_set_new(req, "addresses", list);
            break;
        }
        case 'n':
            json_object_set_new(req, "node", json_string(optarg));
            break;
        case 't':
            json_object_set_new(req, "ttl", json_string(optarg));
            break;
        case 'u': {
            char *end;
            long n = strtol(optarg, &end, 10);
            if (*end || n < 1) {
                fprintf(stderr, "meshctl: --uses wants a positive number\n");
                json_decref(req);
                json_decref(services);
                return EXIT_USAGE;
            }
            json_object_set_new(req, "uses", json_integer(n));
            break;
        }
        case 'd':
            json_object_set_new(req, "description", json_string(optarg));
            break;
        default:
            json_decref(req);
            json_decref(services);
            return EXIT_USAGE;
        }
    }
    if (json_array_size(services) == 0 || !json_object_get(req, "node")) {
        fprintf(stderr, "meshctl: token create needs --node (a node name pattern; '*' for "
                        "any) and --services (SPIFFE ID patterns)\n");
        json_decref(req);
        json_decref(services);
        return EXIT_USAGE;
    }
    json_object_set_new(req, "services", services);
    return run(o, "POST", "/v1/tokens", req, NULL);
}

/* node set-services NAME PATTERN... (argv[0] is "set-services"). */
static int node_set_services(const struct opts *o, int argc, char **argv)
{
    static const char help[] =
        "Usage: meshctl node set-services NAME PATTERN [PATTERN...]\n"
        "\n"
        "Replaces the service identities node NAME may get: SPIFFE ID patterns of the trust\n"
        "domain with at most one '*' each (spiffe://<td>/ns/shop/sa/web,\n"
        "'spiffe://<td>/ns/shop/*'), as on a join token's --services; a PATTERN may also be\n"
        "a comma-separated list. Patterns covering node identities, the controller's or the\n"
        "whole trust domain are refused. The controller checks the next signing request\n"
        "against the new list; certificates already issued stay valid until they expire.\n";
    if (argc == 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        fputs(help, stdout);
        return 0;
    }
    if (argc < 3 || argv[1][0] == '-') {
        fprintf(stderr,
                "meshctl: node set-services wants a node name and at least one "
                "pattern\n%s",
                help);
        return EXIT_USAGE;
    }
    json_t *services = json_array();
    for (int i = 2; i < argc; i++) {
        char *copy = strdup(argv[i]), *save = NULL;
        for (char *p = copy ? strtok_r(copy, ",", &save) : NULL; p; p = strtok_r(NULL, ",", &save))
            json_array_append_new(services, json_string(p));
        free(copy);
    }
    char path[400];
    snprintf(path, sizeof(path), "/v1/agents/%s/services", argv[1]);
    long status = 0;
    json_t *body = json_pack("{s:o}", "services", services);
    json_t *doc = call(o, "PUT", path, body, NULL, &status);
    json_decref(body);
    int r = doc && status < 300 ? 0 : EXIT_FAIL;
    if (r == 0 && o->json) {
        print_json(doc);
    } else if (r == 0) {
        char list[2048];
        join(json_object_get(doc, "services"), list, sizeof(list));
        printf("node %s may now have: %s (from its next signing request)\n",
               json_string_value(json_object_get(doc, "node")), list);
    }
    json_decref(doc);
    return r;
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {{"server", required_argument, NULL, 's'},
                                       {"ca", required_argument, NULL, 'c'},
                                       {"token-file", required_argument, NULL, 't'},
                                       {"output", required_argument, NULL, 'o'},
                                       {"help", no_argument, NULL, 'h'},
                                       {"version", no_argument, NULL, 'V'},
                                       {NULL, 0, NULL, 0}};
    struct opts o = {0};
    const char *token_file = getenv("MESH_CONTROLLER_TOKEN_FILE");
    o.server = getenv("MESH_CONTROLLER_ADDR");
    o.ca = getenv("MESH_CONTROLLER_CACERT");
    int ch;
    /* "+": options end at the command; its own options are its own. */
    while ((ch = getopt_long(argc, argv, "+s:c:t:o:hV", lo, NULL)) != -1) {
        switch (ch) {
        case 's':
            o.server = optarg;
            break;
        case 'c':
            o.ca = optarg;
            break;
        case 't':
            token_file = optarg;
            break;
        case 'o':
            if (strcmp(optarg, "json") != 0 && strcmp(optarg, "table") != 0) {
                fprintf(stderr, "meshctl: -o wants table or json\n");
                return EXIT_USAGE;
            }
            o.json = strcmp(optarg, "json") == 0;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("meshctl %s (%s)\n", MESH_VERSION, MESH_GIT_COMMIT);
            return 0;
        default:
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (optind >= argc) {
        usage(stderr);
        return EXIT_USAGE;
    }
    if (!o.server)
        o.server = "https://127.0.0.1:15443";
    if (!o.ca)
        o.ca = "/var/lib/mesh-controller/ca.crt";
    const char *env_token = getenv("MESH_CONTROLLER_TOKEN");
    if (env_token && !token_file)
        snprintf(o.token, sizeof(o.token), "%s", env_token);
    else {
        const char *path = token_file ? token_file : "/var/lib/mesh-controller/admin.token";
        int r = read_token(path, o.token, sizeof(o.token));
        if (r < 0 && token_file) {
            fprintf(stderr, "meshctl: cannot read the admin token from '%s': %s\n", path,
                    strerror(-r));
            return EXIT_FAIL;
        }
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    int rest = argc - optind;
    char **args = argv + optind;
    int r = EXIT_USAGE;
    if (rest >= 2 && strcmp(args[0], "token") == 0 && strcmp(args[1], "create") == 0) {
        r = token_create(&o, rest - 1, args + 1);
    } else if (rest == 2 && strcmp(args[0], "token") == 0 && strcmp(args[1], "list") == 0) {
        r = run(&o, "GET", "/v1/tokens", NULL, "tokens");
    } else if (rest == 3 && strcmp(args[0], "token") == 0 && strcmp(args[1], "revoke") == 0) {
        char path[200];
        snprintf(path, sizeof(path), "/v1/tokens/%s", args[2]);
        r = run(&o, "DELETE", path, NULL, NULL);
    } else if (strcmp(args[0], "apply") == 0) {
        r = apply(&o, rest, args);
    } else if (strcmp(args[0], "get") == 0) {
        r = resources(&o, rest, args, false);
    } else if (strcmp(args[0], "delete") == 0) {
        r = resources(&o, rest, args, true);
    } else if (rest == 3 && strcmp(args[0], "node") == 0 && strcmp(args[1], "reset") == 0) {
        char path[300];
        snprintf(path, sizeof(path), "/v1/agents/%s/reset", args[2]);
        r = run(&o, "POST", path, NULL, NULL);
    } else if (rest >= 2 && strcmp(args[0], "node") == 0 && strcmp(args[1], "set-services") == 0) {
        r = node_set_services(&o, rest - 1, args + 1);
    } else if (rest >= 2 && strcmp(args[0], "vm") == 0 && strcmp(args[1], "bootstrap") == 0) {
        struct mesh_ctl_conn c = {o.server, o.ca, o.token, o.json};
        r = mesh_ctl__vm_bootstrap(&c, rest - 1, args + 1);
    } else if (rest == 1 && strcmp(args[0], "certs") == 0) {
        r = run(&o, "GET", "/v1/certs", NULL, "certs");
    } else if (rest == 1 && (strcmp(args[0], "status") == 0 || strcmp(args[0], "agents") == 0)) {
        r = run(&o, "GET", "/v1/agents", NULL, "agents");
    } else {
        fprintf(stderr, "meshctl: unknown command '%s' (see meshctl --help)\n", args[0]);
    }
    curl_global_cleanup();
    return r;
}
