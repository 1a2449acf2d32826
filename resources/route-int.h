/*
 * What the three parts of the Route schema share (route.c, route_match.c,
 * route_actions.c). Private to resources/.
 */
#ifndef MESH_ROUTE_INT_H
#define MESH_ROUTE_INT_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "common/cfg.h"
#include "resources/route.h"

/* Predicates on header text. */
bool mesh_route__is_token(const char *s);
bool mesh_route__is_field_value(const char *s);

/* route_match.c */
extern const struct mesh_cfg_schema mesh_route__match_schema;

/* route_actions.c: the schemas and custom fields of a rule's actions. */
extern const struct mesh_cfg_schema mesh_route__header_ops_schema;
extern const struct mesh_cfg_schema mesh_route__retry_schema;
extern const struct mesh_cfg_schema mesh_route__fault_schema;
int mesh_route__decode_redirect(struct mesh_cfg_ctx *ctx, json_t *v, void *field);
void mesh_route__free_redirect(void *field);
int mesh_route__decode_direct(struct mesh_cfg_ctx *ctx, json_t *v, void *field);
void mesh_route__free_direct(void *field);
int mesh_route__decode_rewrite(struct mesh_cfg_ctx *ctx, json_t *v, void *field);
void mesh_route__free_rewrite(void *field);

#endif
