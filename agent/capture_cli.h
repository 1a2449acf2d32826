/*
 * `mesh-agent capture status|install|remove` (agent/capture_cli.c), and what it shares with
 * the daemon (agent/agent_capture.c): the rules a config asks for. docs/capture.md.
 */
#ifndef MESH_AGENT_CAPTURE_CLI_H
#define MESH_AGENT_CAPTURE_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agent/config.h"
#include "agent/config_capture.h"
#include "capture/capture.h"

/* The caller's storage behind a spec: the excluded user IDs and the captured CIDRs. */
struct mesh_agent_capture_scratch {
    uint32_t uids[MESH_AGENT_CAPTURE_LIST_MAX + 1];
    const char *cidrs[MESH_AGENT_CAPTURE_LIST_MAX + 2];
};

/*
 * Fills *ret with the rules cfg's capture section asks for, leaving out agent_uid's traffic
 * and capturing `dests` (borrowed, as is cfg). When the DNS responder is on, its virtual IP
 * ranges are captured too (any port: only the mesh hands out those addresses). Returns 0.
 */
int mesh_agent_capture_spec(const struct mesh_agent_config *cfg, uint32_t agent_uid,
                            const struct mesh_ipport *dests, size_t n,
                            struct mesh_capture_spec *ret,
                            struct mesh_agent_capture_scratch *scratch);
/* The parts (MESH_CAPTURE_*) that go when the agent stops: those failing open (all of them
 * when capture is off). */
unsigned mesh_agent_capture_open_parts(const struct mesh_agent_capture_config *c);
/* "outbound", "inbound", "outbound and inbound" or "no", for messages. */
const char *mesh_agent_capture_parts_name(unsigned parts);
/* The user whose traffic `capture install` leaves out: mesh-agent's when run as root and it
 * exists, else the caller's. */
uint32_t mesh_agent_capture_cli_uid(void);

/*
 * Runs `mesh-agent capture <verb>` with the config at path (NULL: the default): "status"
 * prints what is installed (json_out: as JSON), "install" installs the config's rules
 * (without endpoints: the running agent fills them in), "remove" removes them all, or with
 * `stopping` (systemd's ExecStopPost) the parts that fail open. Returns the exit status: 0,
 * 1 (failure, said on stderr) or 2 (usage).
 */
int mesh_agent_capture_command(const char *path, const char *verb, bool stopping, bool json_out);

#endif
