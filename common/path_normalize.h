/*
 * Request path normalization before routing and authorization, as Envoy's HTTP connection
 * manager does it with `normalize_path`, `merge_slashes` and
 * `path_with_escaped_slashes_action`: the path a policy is checked against is the path the
 * upstream is sent, so `//admin`, `/./admin`, `/x/../admin`, `/%61dmin` and `/%2e/admin`
 * are all `/admin` to both.
 *
 * Pure functions on caller buffers; no allocation, no state.
 */
#ifndef MESH_PATH_NORMALIZE_H
#define MESH_PATH_NORMALIZE_H

#include <stdbool.h>
#include <stddef.h>

/* What happens to %2F and %5C (and a raw '\') in a path. */
enum mesh_path_slashes {
    MESH_PATH_SLASHES_KEEP,   /* left as they are: not separators here (Envoy KEEP_UNCHANGED) */
    MESH_PATH_SLASHES_REJECT, /* the request is refused (REJECT_REQUEST) */
    MESH_PATH_SLASHES_DECODE, /* decoded to '/' and then merged (UNESCAPE_AND_FORWARD plus
                                 merge_slashes: Istio's DECODE_AND_MERGE_SLASHES) */
};

struct mesh_path_options {
    /* RFC 3986 section 6: percent-encoded unreserved characters decoded, the other
     * escapes upper-cased, "." and ".." segments removed (5.2.4); a bad escape or a
     * character a path may not hold is refused. */
    bool normalize;
    bool merge_slashes;  /* "//" becomes "/" */
    int escaped_slashes; /* enum mesh_path_slashes */
};

/* The defaults: normalize, merge, reject escaped slashes. */
#define MESH_PATH_OPTIONS_DEFAULT                                                                  \
    {                                                                                              \
        .normalize = true, .merge_slashes = true, .escaped_slashes = MESH_PATH_SLASHES_REJECT      \
    }

/*
 * Normalizes path[0..len) (an origin-form path: it starts with '/'; no query) into
 * out[0..size). The result is never longer than the input, so size >= len is enough; out
 * may not overlap path. Returns the length of the result, which starts with '/', or
 * -EINVAL with *ret_error saying why the path is refused (answer 400), or -ENOBUFS.
 * Normalizing a result again gives it back unchanged.
 */
int mesh_path_normalize(const char *path, size_t len, const struct mesh_path_options *o, char *out,
                        size_t size, const char **ret_error);

/* The config names of enum mesh_path_slashes, in its order, NULL-terminated: "keep",
 * "reject", "decode_and_merge". */
extern const char *const mesh_path_slashes_names[];

#endif
