#include "agent/ctl_call.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <curl/curl.h>
#include <openssl/crypto.h>

#include "common/alloc.h"
#include "common/backoff.h"

static uv_once_t once = UV_ONCE_INIT;

static void global_init(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

struct sink {
    char *data;
    size_t len;
};

static size_t on_data(char *p, size_t size, size_t n, void *arg)
{
    struct sink *s = arg;
    size_t add = size * n;
    if (s->len + add > 1024 * 1024)
        return 0; /* no controller answer is that large */
    char *d = mesh_realloc(s->data, s->len + add + 1);
    if (!d)
        return 0;
    memcpy(d + s->len, p, add);
    s->len += add;
    d[s->len] = '\0';
    s->data = d;
    return add;
}

static int on_progress(void *arg, curl_off_t dlt, curl_off_t dln, curl_off_t ult, curl_off_t uln)
{
    struct ctl_call *call = arg;
    (void)dlt, (void)dln, (void)ult, (void)uln;
    return atomic_load(&call->cancel) ? 1 : 0;
}

void ctl_call_abandon(struct ctl_call *call)
{
    call->data = NULL;
    atomic_store(&call->cancel, true);
}

static void blob(CURL *c, CURLoption opt, char *pem)
{
    struct curl_blob b = {.data = pem, .len = strlen(pem), .flags = CURL_BLOB_COPY};
    curl_easy_setopt(c, opt, &b);
}

static void run(uv_work_t *w)
{
    struct ctl_call *call = container_of(w, struct ctl_call, work);
    CURL *c = curl_easy_init();
    if (!c) {
        snprintf(call->err, sizeof(call->err), "out of memory");
        return;
    }
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    struct sink out = {0};
    char errbuf[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(c, CURLOPT_URL, call->url);
    if (call->body)
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, call->body);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &out);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, call->timeout_s ? call->timeout_s : 15L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 5L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "https");
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, call);
    blob(c, CURLOPT_CAINFO_BLOB, call->ca_pem);
    if (call->cert_pem) {
        blob(c, CURLOPT_SSLCERT_BLOB, call->cert_pem);
        blob(c, CURLOPT_SSLKEY_BLOB, call->key_pem);
        curl_easy_setopt(c, CURLOPT_SSLCERTTYPE, "PEM");
        curl_easy_setopt(c, CURLOPT_SSLKEYTYPE, "PEM");
    }
    CURLcode r = curl_easy_perform(c);
    if (r == CURLE_OK) {
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &call->status);
        call->answer = out.data;
    } else {
        snprintf(call->err, sizeof(call->err), "%s", errbuf[0] ? errbuf : curl_easy_strerror(r));
        mesh_free(out.data);
    }
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
}

uint64_t ctl_backoff_ms(unsigned failures)
{
    return mesh_backoff_ms(failures, 1000, 60000);
}

void ctl_call_free(struct ctl_call *call)
{
    if (!call)
        return;
    if (call->key_pem)
        OPENSSL_cleanse(call->key_pem, strlen(call->key_pem));
    mesh_free(call->url);
    mesh_free(call->body);
    mesh_free(call->ca_pem);
    mesh_free(call->cert_pem);
    mesh_free(call->key_pem);
    mesh_free(call->answer);
    mesh_free(call);
}

static void after(uv_work_t *w, int status)
{
    struct ctl_call *call = container_of(w, struct ctl_call, work);
    if (status < 0)
        snprintf(call->err, sizeof(call->err), "cancelled");
    if (call->data)
        call->done(call);
    ctl_call_free(call);
}

int ctl_call_start(uv_loop_t *loop, struct ctl_call *call)
{
    uv_once(&once, global_init);
    int r = uv_queue_work(loop, &call->work, run, after);
    if (r < 0)
        ctl_call_free(call);
    return r;
}
