"""provider-limit: never more than m fragments with one provider, so that
losing a whole provider (an outage, a closed account) loses nothing;
cheapest providers first, by each backend's `cost` label.

Backends are ordered by cost (a number; a backend without one comes
last), then by rendezvous hashing of the key and the backend id, so
objects spread over equally cheap backends. Down or full backends are
skipped; fragments already placed (repair) stay and count against their
provider. The `provider` label names the provider (a backend without one
is its own provider).

Parameters:
    max-per-provider   at most this many fragments per provider
                       (default: m; at least 1)
"""

import wit_world
from componentize_py_types import Err
from wit_world.imports import host
from wit_world.imports.types import Health


def fnv1a(h, data):
    for b in data:
        h ^= b
        h = (h * 16777619) & 0xFFFFFFFF
    return h


def limit_of(params, m):
    for name, value in params:
        if name == "max-per-provider":
            return int(value)
    return m


class WitWorld(wit_world.WitWorld):
    def validate_params(self, params):
        for name, value in params:
            if name != "max-per-provider":
                raise Err(f"unknown parameter {name!r} (provider-limit takes only max-per-provider)")
            if not value.isdigit() or int(value) < 1:
                raise Err("max-per-provider: expected a whole number of at least 1")

    def place(self, request):
        width = request.k + request.m
        limit = limit_of(request.params, request.m)
        if limit < 1:
            raise Err("m = 0: no placement survives the loss of a provider; set max-per-provider")
        size = request.object.size
        fragment = -(-size // request.k) if size is not None and request.k else 0
        key = request.object.key.encode()
        seed = fnv1a(fnv1a(2166136261, key), b"\0")

        def provider(c):
            labels = dict(c.labels)
            return labels.get("provider", "id:" + c.id)

        def rank(i):
            c = request.candidates[i]
            cost = dict(c.labels).get("cost")
            try:
                cost = float(cost) if cost is not None else float("inf")
            except ValueError:
                cost = float("inf")
            return (cost, -fnv1a(seed, c.id.encode()), i)

        used = {}
        taken = set()
        out = [None] * width
        for f, current in enumerate(request.current[:width]):
            if current is not None and current < len(request.candidates):
                out[f] = current
                taken.add(current)
                p = provider(request.candidates[current])
                used[p] = used.get(p, 0) + 1
        eligible = [
            i
            for i, c in enumerate(request.candidates)
            if c.health != Health.DOWN and (c.free_bytes is None or c.free_bytes >= fragment)
        ]
        queue = iter(sorted(eligible, key=rank))
        for f in range(width):
            if out[f] is not None:
                continue
            for i in queue:
                p = provider(request.candidates[i])
                if i not in taken and used.get(p, 0) < limit:
                    out[f] = i
                    taken.add(i)
                    used[p] = used.get(p, 0) + 1
                    break
            else:
                host.log(host.Level.WARN, f"provider-limit: cannot place {request.object.key}")
                raise Err(
                    f"not enough healthy backends with room: at most {limit} fragments per provider"
                )
        return out
