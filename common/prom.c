#include "common/prom.h"

#include <math.h>

void mesh_prom_family(struct mesh_buf *b, const char *name, const char *type, const char *help)
{
    mesh_buf_appendf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void append_label_value(struct mesh_buf *b, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\')
            mesh_buf_append_str(b, "\\\\");
        else if (*v == '"')
            mesh_buf_append_str(b, "\\\"");
        else if (*v == '\n')
            mesh_buf_append_str(b, "\\n");
        else
            mesh_buf_append(b, v, 1);
    }
}

void mesh_prom_sample(struct mesh_buf *b, const char *name, const struct mesh_prom_label *labels,
                      double value)
{
    mesh_buf_append_str(b, name);
    if (labels && labels[0].name) {
        mesh_buf_append(b, "{", 1);
        for (size_t i = 0; labels[i].name; i++) {
            mesh_buf_appendf(b, "%s%s=\"", i ? "," : "", labels[i].name);
            append_label_value(b, labels[i].value ? labels[i].value : "");
            mesh_buf_append(b, "\"", 1);
        }
        mesh_buf_append(b, "}", 1);
    }
    if (isnan(value))
        mesh_buf_append_str(b, " NaN\n");
    else if (isinf(value))
        mesh_buf_append_str(b, value > 0 ? " +Inf\n" : " -Inf\n");
    else if (value == floor(value) && fabs(value) < 1e18)
        mesh_buf_appendf(b, " %.0f\n", value);
    else
        mesh_buf_appendf(b, " %.17g\n", value);
}
