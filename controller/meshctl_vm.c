/*
 * meshctl vm bootstrap: everything a new VM needs to join the mesh, as Istio's `istioctl x
 * workload entry configure` writes it for a VM: a join token for that one node, the trust
 * bundle the controller serves, and an agent.json in controller mode with the `controller`
 * registry (so the VM sees the mesh with no service files), into a directory or a tarball
 * laid out under etc/mesh-agent/. Nothing is overwritten without --force, and every input
 * is checked before the token is made, so a refused run spends nothing.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "common/addr.h"
#include "common/labels.h"
#include "common/names.h"
#include "common/spiffe.h"
#include "controller/meshctl-int.h"

#define CONF_DIR "/etc/mesh-agent"
#define STATE_DIR "/var/lib/mesh-agent"

static const char help[] =
    "Usage: meshctl vm bootstrap --node NAME [--services PATTERN[,PATTERN...]]...\n"
    "                            [--zone ZONE] [--address IP] [--controller-url URL]\n"
    "                            [--uses N] [--ttl DURATION] [--root DIR] [--force]\n"
    "                            (--out DIR | --tarball FILE) [-o json]\n"
    "\n"
    "Makes a join token for node NAME (its service identities: SPIFFE ID patterns, as on\n"
    "`token create`), fetches the controller's trust bundle, and writes what the VM needs:\n"
    "  agent.json         controller mode, the `controller` registry, the node's name, zone\n"
    "                     and address, paths as installed on the VM (/etc/mesh-agent/...)\n"
    "  join.token         the token (mode 0600; shown nowhere else)\n"
    "  controller-ca.crt  the trust bundle\n"
    "  services.d/        this host's service files (empty, with a README)\n"
    "--out DIR writes them into DIR (copy them to /etc/mesh-agent on the VM); --tarball FILE\n"
    "writes a .tar.gz with them under etc/mesh-agent/ (on the VM: tar -C / -xzf FILE).\n"
    "\n"
    "  --controller-url URL  where the VM reaches the controller (default: --server)\n"
    "  --address IP          the IP other hosts reach the VM at (node.address; also allowed\n"
    "                        on the token)\n"
    "  --uses N, --ttl D     the token's uses (default 1) and lifetime (default 1h)\n"
    "  --root DIR            the paths in agent.json under DIR (a staging or test tree)\n"
    "  --trust-domain TD     when the trust bundle does not name it\n"
    "  --force               replace files that exist\n"
    "Exit status: 0 written, 1 refused or failed (nothing written), 2 usage error.\n";

struct vm {
    const char *node, *zone, *address, *url, *ttl, *root, *out, *tarball, *td;
    json_t *services;
    long uses;
    bool force;
};

static int usage_error(const char *what)
{
    fprintf(stderr, "meshctl: vm bootstrap: %s (see meshctl vm bootstrap --help)\n", what);
    return MESH_CTL_EXIT_USAGE;
}

/* One HTTPS call; the answer's body (caller frees) and status, or NULL (said on stderr). */
static char *call(const struct mesh_ctl_conn *c, const char *method, const char *path,
                  const char *body, long *status)
{
    char err[CURL_ERROR_SIZE + 32];
    char *out = mesh_ctl__fetch(c, method, path, body, status, err, sizeof(err));
    if (!out)
        fprintf(stderr,
                "meshctl: cannot reach the controller at %s: %s; check --server (or "
                "$MESH_CONTROLLER_ADDR) and --ca; nothing was written\n",
                c->server, err);
    return out;
}

/* The trust domain a CA certificate names in its URI SAN (spiffe://TD), into td. */
static bool bundle_trust_domain(const char *pem, char *td, size_t size)
{
    BIO *b = BIO_new_mem_buf(pem, -1);
    X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    GENERAL_NAMES *names = x ? X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL) : NULL;
    bool found = false;
    for (int i = 0; names && i < sk_GENERAL_NAME_num(names) && !found; i++) {
        GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
        if (g->type != GEN_URI)
            continue;
        const char *uri = (const char *)ASN1_STRING_get0_data(g->d.uniformResourceIdentifier);
        int len = ASN1_STRING_length(g->d.uniformResourceIdentifier);
        if (len > 9 && strncmp(uri, "spiffe://", 9) == 0 && (size_t)(len - 9) < size &&
            !memchr(uri + 9, '/', (size_t)(len - 9))) {
            snprintf(td, size, "%.*s", len - 9, uri + 9);
            found = true;
        }
    }
    GENERAL_NAMES_free(names);
    X509_free(x);
    BIO_free(b);
    return found;
}

/* Fetches the trust bundle: a PEM certificate, or NULL (said on stderr). */
static char *fetch_bundle(const struct mesh_ctl_conn *c)
{
    long status = 0;
    char *pem = call(c, "GET", "/v1/bundle", NULL, &status);
    if (pem && (status != 200 || !strstr(pem, "-----BEGIN CERTIFICATE-----"))) {
        fprintf(stderr,
                "meshctl: %s/v1/bundle answered HTTP %ld without a certificate; is --server "
                "a mesh-controller? Nothing was written\n",
                c->server, status);
        free(pem);
        pem = NULL;
    }
    return pem;
}

/* Makes the token: the answer's JSON (with "token"), or NULL (said on stderr). */
static json_t *create_token(const struct mesh_ctl_conn *c, const struct vm *v)
{
    json_t *req = json_pack("{s:s, s:O, s:I}", "node", v->node, "services", v->services, "uses",
                            (json_int_t)v->uses);
    if (req && v->ttl)
        json_object_set_new(req, "ttl", json_string(v->ttl));
    if (req && v->address)
        json_object_set_new(req, "addresses", json_pack("[s]", v->address));
    json_object_set_new(req, "description", json_sprintf("meshctl vm bootstrap %s", v->node));
    char *text = req ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    if (!text)
        return NULL;
    long status = 0;
    char *body = call(c, "POST", "/v1/tokens", text, &status);
    free(text);
    if (!body)
        return NULL;
    json_t *doc = json_loads(body, 0, NULL);
    free(body);
    if (doc && status == 201 && json_string_value(json_object_get(doc, "token")))
        return doc;
    const char *e = json_string_value(json_object_get(doc, "error"));
    fprintf(stderr,
            "meshctl: the controller refused the join token: %s (HTTP %ld); nothing "
            "was written\n",
            e ? e : "no answer", status);
    json_decref(doc);
    return NULL;
}

/* agent.json for the VM, with every path under root (as installed there). */
static char *agent_json(const struct vm *v, const char *td)
{
    char conf[4200], state[4200], path[4][4300];
    snprintf(conf, sizeof(conf), "%s" CONF_DIR, v->root);
    snprintf(state, sizeof(state), "%s" STATE_DIR, v->root);
    snprintf(path[0], sizeof(path[0]), "%s/controller-ca.crt", conf);
    snprintf(path[1], sizeof(path[1]), "%s/join.token", conf);
    snprintf(path[2], sizeof(path[2]), "%s/services.d", conf);
    snprintf(path[3], sizeof(path[3]), "%s/resources.d", conf);
    json_t *node = json_pack("{s:s}", "name", v->node);
    if (v->zone)
        json_object_set_new(node, "zone", json_string(v->zone));
    if (v->address)
        json_object_set_new(node, "address", json_string(v->address));
    json_t *doc =
        json_pack("{s:o, s:s, s:s, s:s, s:{s:s, s:s, s:s, s:s}, s:[{s:s, s:s, s:s}, {s:s, s:s}]}",
                  "node", node, "trust_domain", td, "state_dir", state, "resources_dir", path[3],
                  "identity", "mode", "controller", "controller", v->url, "controller_ca", path[0],
                  "join_token_file", path[1], "registries", "type", "static", "name", "files",
                  "directory", path[2], "type", "controller", "name", "mesh");
    char *text = doc ? json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
    json_decref(doc);
    char *with_nl = text ? malloc(strlen(text) + 2) : NULL;
    if (with_nl)
        sprintf(with_nl, "%s\n", text);
    free(text);
    return with_nl;
}

static const char services_readme[] =
    "Service files of this host: one JSON file per service running here, e.g.\n"
    "\n"
    "  {\"service\": {\"name\": \"api\", \"namespace\": \"shop\", \"port\": 8080,\n"
    "               \"labels\": {\"version\": \"v1\"}}}\n"
    "\n"
    "The agent reports them to the controller; other hosts find them through it, with no\n"
    "file naming them. Services elsewhere need no file here. See services.md.\n";

enum { F_AGENT, F_TOKEN, F_CA, F_SERVICES, F_README, F_COUNT };

/* The members, relative to the config directory. */
static void members(struct mesh_ctl_member m[F_COUNT], const char *agent, const char *token,
                    const char *ca)
{
    m[F_AGENT] = (struct mesh_ctl_member){"agent.json", 0644, NULL, agent, strlen(agent)};
    /* The agent runs as mesh-agent: the token must be readable by it, by no one else. */
    m[F_TOKEN] = (struct mesh_ctl_member){"join.token", 0600, "mesh-agent", token, strlen(token)};
    m[F_CA] = (struct mesh_ctl_member){"controller-ca.crt", 0644, NULL, ca, strlen(ca)};
    m[F_SERVICES] = (struct mesh_ctl_member){"services.d/", 0755, NULL, NULL, 0};
    m[F_README] = (struct mesh_ctl_member){"services.d/README", 0644, NULL, services_readme,
                                           strlen(services_readme)};
}

/* Refuses (with every name) when a file to be written exists and --force is not given. */
static int check_targets(const struct vm *v)
{
    struct stat st;
    if (v->tarball) {
        if (!v->force && lstat(v->tarball, &st) == 0) {
            fprintf(stderr, "meshctl: '%s' exists; remove it or pass --force\n", v->tarball);
            return MESH_CTL_EXIT_FAIL;
        }
        return 0;
    }
    if (lstat(v->out, &st) == 0 && !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "meshctl: '%s' is not a directory; name another with --out\n", v->out);
        return MESH_CTL_EXIT_FAIL;
    }
    struct mesh_ctl_member m[F_COUNT];
    members(m, "", "", "");
    int bad = 0;
    for (int i = 0; i < F_COUNT; i++) {
        char path[4300];
        snprintf(path, sizeof(path), "%s/%s", v->out, m[i].name);
        if (m[i].data && !v->force && lstat(path, &st) == 0) {
            fprintf(stderr, "meshctl: '%s' exists; remove it or pass --force\n", path);
            bad = 1;
        }
    }
    return bad ? MESH_CTL_EXIT_FAIL : 0;
}

static int write_file(const char *dir, const struct mesh_ctl_member *m, bool force)
{
    char path[4300], tmp[4400];
    snprintf(path, sizeof(path), "%s/%s", dir, m->name);
    snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, m->mode);
    if (fd < 0)
        return -errno;
    ssize_t n = write(fd, m->data, m->len);
    int r = n == (ssize_t)m->len ? 0 : n < 0 ? -errno : -EIO;
    if (r == 0 && fchmod(fd, m->mode) < 0) /* the umask does not narrow what we promise */
        r = -errno;
    if (close(fd) < 0 && r == 0)
        r = -errno;
    if (r == 0)
        r = mesh_ctl__publish(tmp, path, force);
    if (r < 0)
        unlink(tmp);
    return r;
}

static int mkdirs(const char *path, mode_t mode)
{
    char p[4200];
    snprintf(p, sizeof(p), "%s", path);
    for (char *s = p + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        if (mkdir(p, 0755) < 0 && errno != EEXIST)
            return -errno;
        *s = '/';
    }
    return mkdir(p, mode) < 0 && errno != EEXIST ? -errno : 0;
}

static int write_dir(const struct vm *v, const struct mesh_ctl_member *m)
{
    char path[4300];
    int r = mkdirs(v->out, 0755);
    for (int i = 0; r == 0 && i < F_COUNT; i++) {
        if (m[i].data) {
            r = write_file(v->out, &m[i], v->force);
        } else {
            snprintf(path, sizeof(path), "%s/%s", v->out, m[i].name);
            r = mkdir(path, m[i].mode) < 0 && errno != EEXIST ? -errno : 0;
        }
        if (r < 0)
            fprintf(stderr, "meshctl: cannot write '%s/%s': %s\n", v->out, m[i].name, strerror(-r));
    }
    return r;
}

static int write_tarball(const struct vm *v, const struct mesh_ctl_member *m)
{
    struct mesh_ctl_member t[F_COUNT];
    char names[F_COUNT][128];
    for (int i = 0; i < F_COUNT; i++) {
        t[i] = m[i];
        snprintf(names[i], sizeof(names[i]), "etc/mesh-agent/%s", m[i].name);
        t[i].name = names[i];
    }
    int r = mesh_ctl__tar_write(v->tarball, v->force, t, F_COUNT);
    if (r < 0)
        fprintf(stderr, "meshctl: cannot write '%s': %s\n", v->tarball, strerror(-r));
    return r;
}

static void report(const struct mesh_ctl_conn *c, const struct vm *v, const char *td, json_t *tok,
                   const struct mesh_ctl_member *m)
{
    const char *id = json_string_value(json_object_get(tok, "id"));
    json_int_t expires = json_integer_value(json_object_get(tok, "expires_at"));
    if (c->json) {
        json_t *files = json_array();
        for (int i = 0; i < F_COUNT; i++) {
            char mode[8], member[128], installed[128];
            snprintf(mode, sizeof(mode), "%04o", m[i].mode);
            snprintf(member, sizeof(member), "%s%s", v->tarball ? "etc/mesh-agent/" : "",
                     m[i].name);
            snprintf(installed, sizeof(installed), CONF_DIR "/%s", m[i].name);
            json_array_append_new(files, json_pack("{s:s, s:s, s:s}", "path", member, "mode", mode,
                                                   "installed_as", installed));
        }
        json_t *doc = json_pack("{s:s, s:s, s:s, s:{s:s, s:I, s:I}, s:o}", "node", v->node,
                                "trust_domain", td, "controller", v->url, "token", "id", id, "uses",
                                (json_int_t)v->uses, "expires_at", expires, "files", files);
        json_object_set_new(doc, v->tarball ? "tarball" : "out",
                            json_string(v->tarball ? v->tarball : v->out));
        char *s = json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        if (s)
            printf("%s\n", s);
        free(s);
        json_decref(doc);
        return;
    }
    char when[32];
    time_t t = (time_t)expires;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
    printf("node %s: join token %s (%ld use%s, expires %s)\n", v->node, id, v->uses,
           v->uses == 1 ? "" : "s", when);
    if (v->tarball) {
        printf("wrote %s: etc/mesh-agent/{agent.json,join.token,controller-ca.crt,services.d/}\n"
               "on the VM, with the mesh-agent package installed:\n"
               "  tar -C / -xzf %s && systemctl enable --now mesh-agent\n",
               v->tarball, strrchr(v->tarball, '/') ? strrchr(v->tarball, '/') + 1 : v->tarball);
    } else {
        printf("wrote %s/: agent.json, join.token (0600), controller-ca.crt, services.d/\n"
               "on the VM, with the mesh-agent package installed: copy them to %s/,\n"
               "  chown mesh-agent %s/join.token && systemctl enable --now mesh-agent\n",
               v->out, CONF_DIR, CONF_DIR);
    }
}

static int add_services(json_t *list, const char *arg)
{
    char *copy = strdup(arg), *save = NULL;
    if (!copy)
        return -ENOMEM;
    for (char *p = strtok_r(copy, ",", &save); p; p = strtok_r(NULL, ",", &save))
        json_array_append_new(list, json_string(p));
    free(copy);
    return 0;
}

/* Parses and checks the options; 0 or the exit status. */
static int parse(struct vm *v, struct mesh_ctl_conn *c, int argc, char **argv)
{
    static const struct option lo[] = {{"node", required_argument, NULL, 'n'},
                                       {"services", required_argument, NULL, 's'},
                                       {"zone", required_argument, NULL, 'z'},
                                       {"address", required_argument, NULL, 'a'},
                                       {"controller-url", required_argument, NULL, 'u'},
                                       {"uses", required_argument, NULL, 'N'},
                                       {"ttl", required_argument, NULL, 't'},
                                       {"root", required_argument, NULL, 'r'},
                                       {"out", required_argument, NULL, 'd'},
                                       {"tarball", required_argument, NULL, 'f'},
                                       {"trust-domain", required_argument, NULL, 'T'},
                                       {"force", no_argument, NULL, 'F'},
                                       {"output", required_argument, NULL, 'o'},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
    int ch;
    optind = 0; /* a fresh scan that permutes: options anywhere after "bootstrap" */
    opterr = 1;
    while ((ch = getopt_long(argc, argv, "o:h", lo, NULL)) != -1) {
        char *end;
        switch (ch) {
        case 'n':
            v->node = optarg;
            break;
        case 's':
            add_services(v->services, optarg);
            break;
        case 'z':
            v->zone = optarg;
            break;
        case 'a':
            v->address = optarg;
            break;
        case 'u':
            v->url = optarg;
            break;
        case 'N':
            v->uses = strtol(optarg, &end, 10);
            if (*end || v->uses < 1 || v->uses > 10000)
                return usage_error("--uses wants a number from 1 to 10000");
            break;
        case 't':
            v->ttl = optarg;
            break;
        case 'r':
            v->root = optarg;
            break;
        case 'd':
            v->out = optarg;
            break;
        case 'f':
            v->tarball = optarg;
            break;
        case 'T':
            v->td = optarg;
            break;
        case 'F':
            v->force = true;
            break;
        case 'o':
            if (strcmp(optarg, "json") != 0 && strcmp(optarg, "table") != 0)
                return usage_error("-o wants table or json");
            c->json = strcmp(optarg, "json") == 0;
            break;
        case 'h':
            fputs(help, stdout);
            return -1;
        default: /* getopt said which option */
            return usage_error("bad option");
        }
    }
    if (optind < argc) {
        fprintf(stderr,
                "meshctl: vm bootstrap: unexpected '%s'; a list of patterns is one "
                "--services A,B or several --services\n",
                argv[optind]);
        return MESH_CTL_EXIT_USAGE;
    }
    const char *why;
    if (!v->node)
        return usage_error("--node NAME is required (the VM's node name)");
    if ((why = mesh_name_check_node(v->node))) {
        fprintf(stderr,
                "meshctl: vm bootstrap: --node '%s' is not a node name: %s (a lowercase DNS "
                "name such as vm-1 or web-1.zone-a)\n",
                v->node, why);
        return MESH_CTL_EXIT_USAGE;
    }
    if (v->zone && !mesh_label_value_valid(v->zone, &why)) {
        fprintf(stderr, "meshctl: vm bootstrap: --zone '%s': %s\n", v->zone, why);
        return MESH_CTL_EXIT_USAGE;
    }
    if (v->address && !mesh_is_ip_literal(v->address))
        return usage_error("--address wants an IPv4 or IPv6 address");
    if (!v->out == !v->tarball)
        return usage_error("give one of --out DIR and --tarball FILE");
    if ((v->out && !*v->out) || (v->tarball && !*v->tarball))
        return usage_error("--out and --tarball want a name");
    if (v->root[0] && v->root[0] != '/')
        return usage_error("--root wants an absolute path");
    if (strncmp(v->url, "https://", 8) != 0)
        return usage_error("--controller-url wants an https:// URL (the agent speaks TLS to "
                           "the controller)");
    if (v->td && (why = mesh_spiffe_trust_domain_check(v->td))) {
        fprintf(stderr, "meshctl: vm bootstrap: --trust-domain '%s': %s\n", v->td, why);
        return MESH_CTL_EXIT_USAGE;
    }
    return 0;
}

int mesh_ctl__vm_bootstrap(const struct mesh_ctl_conn *conn, int argc, char **argv)
{
    struct mesh_ctl_conn c = *conn;
    struct vm v = {.services = json_array(), .uses = 1, .root = "", .url = conn->server};
    char root[4096], td[256] = "";
    char *pem = NULL, *agent = NULL;
    json_t *tok = NULL;
    int r = parse(&v, &c, argc, argv);
    if (r != 0) {
        r = r < 0 ? 0 : r;
        goto out;
    }
    /* "/srv/x/" and "/" as --root mean "/srv/x" and "". */
    snprintf(root, sizeof(root), "%s", v.root);
    for (size_t n = strlen(root); n && root[n - 1] == '/'; n--)
        root[n - 1] = '\0';
    v.root = root;
    if ((r = check_targets(&v)) != 0)
        goto out;
    r = MESH_CTL_EXIT_FAIL;
    if (!(pem = fetch_bundle(&c)))
        goto out;
    if (v.td)
        snprintf(td, sizeof(td), "%s", v.td);
    else if (!bundle_trust_domain(pem, td, sizeof(td))) {
        const char *p = json_string_value(json_array_get(v.services, 0));
        const char *slash = p && strncmp(p, "spiffe://", 9) == 0 ? strchr(p + 9, '/') : NULL;
        if (!slash) {
            fprintf(stderr, "meshctl: the controller's trust bundle names no trust domain; "
                            "give it with --trust-domain. Nothing was written\n");
            goto out;
        }
        snprintf(td, sizeof(td), "%.*s", (int)(slash - p - 9), p + 9);
    }
    if (!(agent = agent_json(&v, td)))
        goto out;
    if (!(tok = create_token(&c, &v)))
        goto out;
    char token[256];
    snprintf(token, sizeof(token), "%s\n", json_string_value(json_object_get(tok, "token")));
    struct mesh_ctl_member m[F_COUNT];
    members(m, agent, token, pem);
    if ((v.tarball ? write_tarball(&v, m) : write_dir(&v, m)) < 0) {
        fprintf(stderr, "meshctl: revoke the unused token: meshctl token revoke %s\n",
                json_string_value(json_object_get(tok, "id")));
        goto out;
    }
    report(&c, &v, td, tok, m);
    r = 0;
out:
    json_decref(v.services);
    json_decref(tok);
    free(agent);
    free(pem);
    return r;
}
