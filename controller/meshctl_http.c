/*
 * meshctl's one HTTPS call to the controller (controller/meshctl-int.h): libcurl's easy
 * interface, the admin token as a bearer, the controller's CA, a bounded answer.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "controller/meshctl-int.h"

#define BODY_MAX (64 * 1024 * 1024) /* a bound against a runaway answer, far above a catalog */

struct body {
    char *data;
    size_t len;
};

static size_t on_data(char *p, size_t size, size_t n, void *arg)
{
    struct body *b = arg;
    size_t add = size * n;
    if (b->len + add > BODY_MAX)
        return 0;
    char *d = realloc(b->data, b->len + add + 1);
    if (!d)
        return 0;
    memcpy(d + b->len, p, add);
    b->len += add;
    d[b->len] = '\0';
    b->data = d;
    return add;
}

char *mesh_ctl__fetch(const struct mesh_ctl_conn *c, const char *method, const char *path,
                      const char *body, long *status, char *err, size_t err_size)
{
    CURL *h = curl_easy_init();
    if (!h) {
        snprintf(err, err_size, "out of memory");
        return NULL;
    }
    char url[2048], auth[200];
    snprintf(url, sizeof(url), "%s%s", c->server, path);
    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", c->token);
    struct curl_slist *hdr = curl_slist_append(NULL, auth);
    hdr = curl_slist_append(hdr, "Content-Type: application/json");
    struct body out = {0};
    char errbuf[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(h, CURLOPT_CAINFO, c->ca);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &out);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 30L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    if (body)
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    CURLcode r = curl_easy_perform(h);
    if (r != CURLE_OK) {
        snprintf(err, err_size, "%s", errbuf[0] ? errbuf : curl_easy_strerror(r));
        free(out.data);
        out.data = NULL;
    } else {
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, status);
        if (!out.data && !(out.data = strdup("")))
            snprintf(err, err_size, "out of memory");
    }
    curl_slist_free_all(hdr);
    curl_easy_cleanup(h);
    return out.data;
}
