/*
 * One HTTPS call to the mesh-controller, off the loop: libcurl runs it in libuv's thread
 * pool and the answer comes back on the loop. For the control plane's few calls an hour
 * (enrollment, renewals); watches will want libcurl's multi interface on the loop.
 */
#ifndef MESH_AGENT_CTL_CALL_H
#define MESH_AGENT_CTL_CALL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

struct ctl_call {
    uv_work_t work;
    /* In (owned; freed with the call). */
    char *url;
    char *body;     /* NULL: a GET */
    long timeout_s; /* 0: 15 s */
    char *ca_pem;   /* whom to trust */
    char *cert_pem; /* who we are (NULL: nobody yet) */
    char *key_pem;
    /* Out. */
    long status; /* 0: no answer (err says why) */
    char *answer;
    char err[256];
    void (*done)(struct ctl_call *call);
    void *data;         /* NULL once the owner has gone: the call just frees itself */
    atomic_bool cancel; /* the owner went away: end the transfer (within a second) */
};

/* The owner goes away: the call ends soon and frees itself without calling back. */
void ctl_call_abandon(struct ctl_call *call);

/* Starts the call; done(call) runs on the loop, then the call is freed. Returns 0 or -errno
 * (the call freed). Takes the strings given (mesh_malloc'ed). */
int ctl_call_start(uv_loop_t *loop, struct ctl_call *call);
void ctl_call_free(struct ctl_call *call);

/* How long to wait after `failures` failed calls in a row: 1 s doubling to 60 s, with
 * "equal jitter" (half of it fixed, half random), so that a fleet does not retry in step. */
uint64_t ctl_backoff_ms(unsigned failures);

#endif
