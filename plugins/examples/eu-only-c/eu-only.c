/* eu-only (data sovereignty): fragments only on backends whose "region"
 * label is in the allowed list; an error, never a placement elsewhere,
 * when the allowed regions cannot hold k + m distinct fragments.
 *
 * Ranking is rendezvous hashing (FNV-1a of key, 0, backend id) among the
 * allowed, healthy backends with room for a fragment. Fragments already
 * placed (repair) stay if their backend is still allowed.
 *
 * Parameters:
 *   allowed-regions   required: comma-separated regions, e.g.
 *                     "eu-west,eu-central"
 */
#include <stdlib.h>
#include <string.h>

#include "placement.h"

static int eq(const placement_string_t *s, const char *lit) {
    size_t n = strlen(lit);
    return s->len == n && memcmp(s->ptr, lit, n) == 0;
}

/* Is `value` one of the comma-separated items of `list`? */
static int in_list(const placement_string_t *list, const placement_string_t *value) {
    size_t start = 0;
    for (size_t i = 0; i <= list->len; i++) {
        if (i == list->len || list->ptr[i] == ',') {
            size_t a = start, b = i;
            while (a < b && list->ptr[a] == ' ') a++;
            while (b > a && list->ptr[b - 1] == ' ') b--;
            if (b - a == value->len && memcmp(list->ptr + a, value->ptr, value->len) == 0) {
                return 1;
            }
            start = i + 1;
        }
    }
    return 0;
}

static const placement_string_t *find(const shardgate_placement_types_list_pair_t *pairs,
                                      const char *name) {
    for (size_t i = 0; i < pairs->len; i++) {
        if (eq(&pairs->ptr[i].f0, name)) {
            return &pairs->ptr[i].f1;
        }
    }
    return NULL;
}

bool exports_placement_validate_params(placement_list_pair_t *params, placement_string_t *err) {
    bool ok = true;
    const placement_string_t *allowed = NULL;
    for (size_t i = 0; i < params->len; i++) {
        if (eq(&params->ptr[i].f0, "allowed-regions")) {
            allowed = &params->ptr[i].f1;
        }
    }
    if (allowed == NULL || allowed->len == 0) {
        placement_string_dup(err, "allowed-regions: required, e.g. \"eu-west,eu-central\"");
        ok = false;
    }
    for (size_t i = 0; i < params->len && ok; i++) {
        if (!eq(&params->ptr[i].f0, "allowed-regions")) {
            placement_string_dup(err, "unknown parameter (eu-only takes only allowed-regions)");
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

bool exports_placement_place(placement_request_t *req, placement_list_u32_t *ret,
                             placement_string_t *err) {
    size_t width = (size_t)req->k + (size_t)req->m;
    size_t n = req->candidates.len;
    const placement_string_t *allowed = find(&req->params, "allowed-regions");
    bool *ok = calloc(n ? n : 1, sizeof(bool));
    bool *taken = calloc(n ? n : 1, sizeof(bool));
    ranked_t *ranked = malloc(sizeof(ranked_t) * (n ? n : 1));
    uint32_t *out = malloc(sizeof(uint32_t) * (width ? width : 1));
    uint64_t fragment = 0;
    if (req->object.size.is_some && req->k > 0) {
        fragment = (req->object.size.val + req->k - 1) / req->k;
    }
    size_t eligible = 0;
    for (size_t i = 0; i < n && allowed; i++) {
        const shardgate_placement_types_candidate_t *c = &req->candidates.ptr[i];
        const placement_string_t *region = find(&c->labels, "region");
        ok[i] = region && in_list(allowed, region);
        if (ok[i] && c->health != SHARDGATE_PLACEMENT_TYPES_HEALTH_DOWN &&
            !(c->free_bytes.is_some && c->free_bytes.val < fragment)) {
            uint32_t h = fnv1a(2166136261u, req->object.key.ptr, req->object.key.len);
            h = fnv1a(h, (const uint8_t *)"", 1);
            ranked[eligible].score = fnv1a(h, c->id.ptr, c->id.len);
            ranked[eligible].index = (uint32_t)i;
            eligible++;
        }
    }
    qsort(ranked, eligible, sizeof(ranked_t), by_score);
    size_t filled = 0, next = 0;
    for (size_t f = 0; f < width && f < req->current.len; f++) {
        placement_option_u32_t cur = req->current.ptr[f];
        if (cur.is_some && cur.val < n && ok[cur.val] && !taken[cur.val]) {
            taken[cur.val] = true;
        }
    }
    for (size_t f = 0; f < width; f++) {
        placement_option_u32_t cur = f < req->current.len ? req->current.ptr[f]
                                                          : (placement_option_u32_t){0};
        if (cur.is_some && cur.val < n && ok[cur.val]) {
            out[f] = cur.val;
            filled++;
            continue;
        }
        while (next < eligible) {
            uint32_t i = ranked[next++].index;
            if (!taken[i]) {
                taken[i] = true;
                out[f] = i;
                filled++;
                break;
            }
        }
    }
    free(ok);
    free(taken);
    free(ranked);
    if (filled < width) {
        free(out);
        placement_string_dup(err, "not enough healthy backends with room in the allowed regions");
        placement_request_free(req);
        return false;
    }
    ret->ptr = out;
    ret->len = width;
    placement_request_free(req);
    return true;
}
