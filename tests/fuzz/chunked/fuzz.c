/* Fuzzes the chunked decoder, in one piece and split at every third byte. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/http_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *a = malloc(size + 1), *b = malloc(size + 1);
    if (!a || !b)
        abort();
    memcpy(a, data, size);
    struct mesh_http_chunked d;
    size_t consumed, n1, n2 = 0;
    mesh_http_chunked_init(&d);
    int r1 = mesh_http_chunked_decode(&d, a, size, &consumed, &n1, NULL);
    if (consumed > size || n1 > consumed)
        abort();
    /* Fed in pieces, the decoder must reach the same verdict with the same data. */
    mesh_http_chunked_init(&d);
    int r2 = 0;
    size_t pos = 0;
    while (pos < size && r2 == 0) {
        size_t piece = size - pos < 3 ? size - pos : 3;
        memcpy(b + n2, data + pos, piece);
        size_t used, got;
        r2 = mesh_http_chunked_decode(&d, b + n2, piece, &used, &got, NULL);
        n2 += got;
        pos += used;
    }
    if (r1 != r2 || (r1 >= 0 && (n1 != n2 || memcmp(a, b, n1) != 0)))
        abort();
    free(a);
    free(b);
    return 0;
}
