/* Fuzzes the capture conflict check over a ruleset's JSON (what `nft -j list ruleset`
 * prints; other programs on the host write the rules it describes). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "capture/capture.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *j = json_loadb((const char *)data, size, 0, NULL);
    if (!j)
        return 0;
    static const uint16_t ports[] = {8080, 9090};
    struct mesh_ipport dest;
    mesh_ipport_from_ip("10.0.0.9", 8080, &dest);
    struct mesh_capture_spec s = {.table = "mesh_agent",
                                  .outbound = true,
                                  .outbound_port = 15001,
                                  .dests = &dest,
                                  .n_dests = 1,
                                  .inbound = true,
                                  .inbound_port = 15006,
                                  .inbound_ports = ports,
                                  .n_inbound_ports = 2};
    char err[512];
    for (int all = 0; all < 2; all++) {
        s.outbound_all = all;
        int r = mesh_capture_conflicts(j, &s, err, sizeof(err));
        if (r < -1000 || r > 1 || (r != 0 && !memchr(err, '\0', sizeof(err))))
            abort();
    }
    json_decref(j);
    return 0;
}
