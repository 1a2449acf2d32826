#include "common/yaml.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <yaml.h>

#define MAX_DEPTH 64
#define MAX_NODES 200000

struct walk {
    yaml_document_t *doc;
    size_t nodes;
    char *err;
    size_t errlen;
};

static json_t *convert(struct walk *w, yaml_node_t *n, int depth)
{
    if (!n || depth > MAX_DEPTH || ++w->nodes > MAX_NODES) {
        snprintf(w->err, w->errlen, "%zu:%zu: nested too deep or too many nodes",
                 n ? n->start_mark.line + 1 : 0, n ? n->start_mark.column + 1 : 0);
        return NULL;
    }
    switch (n->type) {
    case YAML_SCALAR_NODE:
        return json_stringn((const char *)n->data.scalar.value, n->data.scalar.length);
    case YAML_SEQUENCE_NODE: {
        json_t *a = json_array();
        for (yaml_node_item_t *i = n->data.sequence.items.start;
             a && i < n->data.sequence.items.top; i++) {
            json_t *v = convert(w, yaml_document_get_node(w->doc, *i), depth + 1);
            if (!v || json_array_append_new(a, v) < 0) {
                json_decref(a);
                return NULL;
            }
        }
        return a;
    }
    case YAML_MAPPING_NODE: {
        json_t *o = json_object();
        for (yaml_node_pair_t *p = n->data.mapping.pairs.start; o && p < n->data.mapping.pairs.top;
             p++) {
            yaml_node_t *k = yaml_document_get_node(w->doc, p->key);
            if (!k || k->type != YAML_SCALAR_NODE) {
                snprintf(w->err, w->errlen, "%zu:%zu: a mapping key that is not a scalar",
                         n->start_mark.line + 1, n->start_mark.column + 1);
                json_decref(o);
                return NULL;
            }
            char key[256];
            snprintf(key, sizeof(key), "%.*s", (int)k->data.scalar.length,
                     (const char *)k->data.scalar.value);
            json_t *v = convert(w, yaml_document_get_node(w->doc, p->value), depth + 1);
            if (!v || json_object_set_new(o, key, v) < 0) {
                json_decref(o);
                return NULL;
            }
        }
        return o;
    }
    default:
        return json_null();
    }
}

int mesh_yaml_to_json(const char *data, size_t len, json_t **ret, char *err, size_t errlen)
{
    yaml_parser_t parser;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&parser))
        return -ENOMEM;
    yaml_parser_set_input_string(&parser, (const unsigned char *)data, len);
    if (!yaml_parser_load(&parser, &doc)) {
        snprintf(err, errlen, "%zu:%zu: %s", parser.problem_mark.line + 1,
                 parser.problem_mark.column + 1, parser.problem ? parser.problem : "invalid YAML");
        int r = parser.error == YAML_MEMORY_ERROR ? -ENOMEM : -EINVAL;
        yaml_parser_delete(&parser);
        return r;
    }
    struct walk w = {.doc = &doc, .err = err, .errlen = errlen};
    err[0] = '\0';
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    json_t *j = root ? convert(&w, root, 0) : json_object();
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    if (!j) {
        if (!err[0])
            return -ENOMEM;
        return -EINVAL;
    }
    *ret = j;
    return 0;
}
