/* spread-sites: k + m fragments over distinct backends, no site holding
 * more than ceil((k + m) / sites) of them, so losing any one site loses as
 * few fragments as the sites allow.
 *
 * Backends are ranked per object by rendezvous hashing (FNV-1a of
 * key, 0, backend id): objects spread evenly, and the ranking of the
 * other backends does not change when one is added or removed. Backends
 * that are down, or have less free space than one fragment, are skipped.
 * Fragments already placed (`current`, for repair) stay where they are
 * and count against their site.
 *
 * Parameters:
 *   max-per-site   at most this many fragments per site (default:
 *                  ceil((k + m) / sites))
 */
#include <stdlib.h>
#include <string.h>

#include "placement.h"

static int eq(const placement_string_t *s, const char *lit) {
    size_t n = strlen(lit);
    return s->len == n && memcmp(s->ptr, lit, n) == 0;
}

static int streq(const placement_string_t *a, const placement_string_t *b) {
    return a->len == b->len && memcmp(a->ptr, b->ptr, a->len) == 0;
}

/* A positive decimal number, or 0 when the text is not one. */
static uint32_t parse_u32(const placement_string_t *s) {
    uint64_t v = 0;
    if (s->len == 0 || s->len > 9) {
        return 0;
    }
    for (size_t i = 0; i < s->len; i++) {
        if (s->ptr[i] < '0' || s->ptr[i] > '9') {
            return 0;
        }
        v = v * 10 + (uint64_t)(s->ptr[i] - '0');
    }
    return (uint32_t)v;
}

bool exports_placement_validate_params(placement_list_pair_t *params, placement_string_t *err) {
    bool ok = true;
    for (size_t i = 0; i < params->len && ok; i++) {
        if (eq(&params->ptr[i].f0, "max-per-site")) {
            if (parse_u32(&params->ptr[i].f1) == 0) {
                placement_string_dup(err, "max-per-site: expected a positive whole number");
                ok = false;
            }
        } else {
            placement_string_dup(err, "unknown parameter (spread-sites takes only max-per-site)");
            ok = false;
        }
    }
    placement_list_pair_free(params);
    return ok;
}

static uint32_t fnv1a(uint32_t h, const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 16777619u;
    }
    return h;
}

/* The candidate's site: its "site" label, or its id. */
static const placement_string_t *site_of(const shardgate_placement_types_candidate_t *c) {
    for (size_t i = 0; i < c->labels.len; i++) {
        if (eq(&c->labels.ptr[i].f0, "site")) {
            return &c->labels.ptr[i].f1;
        }
    }
    return &c->id;
}

typedef struct {
    uint32_t score;
    uint32_t index;
} ranked_t;

static int by_score(const void *a, const void *b) {
    const ranked_t *x = a, *y = b;
    if (x->score != y->score) {
        return x->score > y->score ? -1 : 1;
    }
    return x->index < y->index ? -1 : 1;
}

static bool fail(placement_request_t *req, placement_string_t *err, const char *why) {
    placement_string_dup(err, why);
    placement_request_free(req);
    return false;
}

bool exports_placement_place(placement_request_t *req, placement_list_u32_t *ret,
                             placement_string_t *err) {
    size_t width = (size_t)req->k + (size_t)req->m;
    size_t n = req->candidates.len;
    if (req->current.len != width) {
        return fail(req, err, "current must list k + m fragments");
    }
    /* Site of each candidate, as the index of its first candidate. */
    uint32_t *site = malloc(sizeof(uint32_t) * (n ? n : 1));
    uint32_t *used = calloc(n ? n : 1, sizeof(uint32_t));
    bool *taken = calloc(n ? n : 1, sizeof(bool));
    ranked_t *ranked = malloc(sizeof(ranked_t) * (n ? n : 1));
    uint32_t *out = malloc(sizeof(uint32_t) * (width ? width : 1));
    size_t sites = 0, eligible = 0;
    uint64_t fragment = 0;
    if (req->object.size.is_some && req->k > 0) {
        fragment = (req->object.size.val + req->k - 1) / req->k;
    }
    for (size_t i = 0; i < n; i++) {
        const shardgate_placement_types_candidate_t *c = &req->candidates.ptr[i];
        site[i] = (uint32_t)i;
        for (size_t j = 0; j < i; j++) {
            if (streq(site_of(c), site_of(&req->candidates.ptr[j]))) {
                site[i] = site[j];
                break;
            }
        }
        bool ok = c->health != SHARDGATE_PLACEMENT_TYPES_HEALTH_DOWN &&
                  !(c->free_bytes.is_some && c->free_bytes.val < fragment);
        if (ok) {
            uint32_t h = fnv1a(2166136261u, req->object.key.ptr, req->object.key.len);
            h = fnv1a(h, (const uint8_t *)"", 1);
            ranked[eligible].score = fnv1a(h, c->id.ptr, c->id.len);
            ranked[eligible].index = (uint32_t)i;
            eligible++;
        }
    }
    /* Distinct sites among the eligible candidates. */
    for (size_t e = 0; e < eligible; e++) {
        uint32_t s = site[ranked[e].index];
        bool seen = false;
        for (size_t f = 0; f < e; f++) {
            if (site[ranked[f].index] == s) {
                seen = true;
                break;
            }
        }
        if (!seen) {
            sites++;
        }
    }
    uint32_t limit = sites ? (uint32_t)((width + sites - 1) / sites) : 0;
    for (size_t i = 0; i < req->params.len; i++) {
        if (eq(&req->params.ptr[i].f0, "max-per-site")) {
            limit = parse_u32(&req->params.ptr[i].f1);
        }
    }
    /* Fragments already placed stay. */
    size_t filled = 0;
    for (size_t f = 0; f < width; f++) {
        if (req->current.ptr[f].is_some && req->current.ptr[f].val < n) {
            uint32_t i = req->current.ptr[f].val;
            taken[i] = true;
            used[site[i]]++;
        }
    }
    qsort(ranked, eligible, sizeof(ranked_t), by_score);
    size_t next = 0;
    for (size_t f = 0; f < width; f++) {
        if (req->current.ptr[f].is_some && req->current.ptr[f].val < n) {
            out[f] = req->current.ptr[f].val;
            filled++;
            continue;
        }
        while (next < eligible) {
            uint32_t i = ranked[next++].index;
            if (!taken[i] && used[site[i]] < limit) {
                taken[i] = true;
                used[site[i]]++;
                out[f] = i;
                filled++;
                break;
            }
        }
    }
    free(site);
    free(used);
    free(taken);
    free(ranked);
    if (filled < width) {
        free(out);
        return fail(req, err,
                    "not enough healthy backends with room: at most max-per-site fragments per "
                    "site, each on a distinct backend");
    }
    ret->ptr = out;
    ret->len = width;
    placement_request_free(req);
    return true;
}
