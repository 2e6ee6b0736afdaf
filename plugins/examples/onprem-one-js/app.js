// onprem-one: at least `min` fragments (default 1) on backends the
// operator owns, so a copy of every object's data stays in the building
// even if every cloud account is closed; the other fragments spread over
// all backends, fewest per site first.
//
// A backend is on-prem when its label `label` (default "provider") has one
// of the comma-separated `values` (default "onprem"). Within those rules,
// backends are ranked by rendezvous hashing of the object key and the
// backend id, so objects spread evenly and the same object always gets the
// same answer. Down or full backends are skipped, degraded ones used last;
// fragments already placed (repair) stay where they are and count.
//
// Built with jco's QuickJS backend (no WASI; see build.sh). Under QuickJS
// an absent option is `null` (StarlingMonkey gives `undefined`), so every
// option is tested with `== null`, which covers both; u64 values arrive as
// Number there and as BigInt under StarlingMonkey, and Number() accepts
// both (sizes stay exact below 2^53 bytes). QuickJS has no TextEncoder,
// hence the UTF-8 encoder below.

import { log } from 'shardgate:placement/host@0.1.0';

const PARAMS = ['label', 'values', 'min'];

function utf8(text) {
  const out = [];
  for (const ch of text) {
    let c = ch.codePointAt(0);
    if (c < 0x80) out.push(c);
    else if (c < 0x800) out.push(0xc0 | (c >> 6), 0x80 | (c & 63));
    else if (c < 0x10000) out.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
    else out.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 63), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
  }
  return out;
}

function fnv1a(h, bytes) {
  for (const b of bytes) {
    h = Math.imul(h ^ b, 16777619) >>> 0;
  }
  return h;
}

function settings(params, width) {
  const p = new Map(params);
  const min = p.has('min') ? Number(p.get('min')) : 1;
  return {
    label: p.get('label') ?? 'provider',
    values: new Set((p.get('values') ?? 'onprem').split(',').map((v) => v.trim())),
    min: Math.min(min, width),
  };
}

export function validateParams(params) {
  for (const [name, value] of params) {
    if (!PARAMS.includes(name)) {
      throw `unknown parameter ${JSON.stringify(name)} (onprem-one takes ${PARAMS.join(', ')})`;
    }
    if (name === 'min' && !/^[1-9][0-9]{0,2}$/.test(value)) {
      throw 'min: expected a whole number of at least 1';
    }
    if ((name === 'label' || name === 'values') && value.trim() === '') {
      throw `${name}: must not be empty`;
    }
  }
}

// Healthy before degraded, then the least-used site, then the hash.
function better(st, a, b) {
  const da = st.candidates[a].health === 'degraded' ? 1 : 0;
  const db = st.candidates[b].health === 'degraded' ? 1 : 0;
  if (da !== db) return da < db;
  const sa = st.perSite.get(st.site[a]) ?? 0;
  const sb = st.perSite.get(st.site[b]) ?? 0;
  if (sa !== sb) return sa < sb;
  return st.score[a] !== st.score[b] ? st.score[a] > st.score[b] : a < b;
}

function usable(st, i) {
  const c = st.candidates[i];
  return (
    !st.taken.has(i) &&
    c.health !== 'down' &&
    (c.freeBytes == null || Number(c.freeBytes) >= st.fragment)
  );
}

function best(st, onlyOnprem) {
  let pick = -1;
  for (let i = 0; i < st.candidates.length; i++) {
    if (!usable(st, i) || (onlyOnprem && !st.onprem[i])) continue;
    if (pick < 0 || better(st, i, pick)) pick = i;
  }
  return pick;
}

function take(st, f, i) {
  st.out[f] = i;
  st.taken.add(i);
  st.perSite.set(st.site[i], (st.perSite.get(st.site[i]) ?? 0) + 1);
  if (st.onprem[i]) st.onpremPlaced += 1;
}

export function place(req) {
  const width = req.k + req.m;
  const want = settings(req.params, width);
  const candidates = req.candidates;
  const labels = candidates.map((c) => new Map(c.labels));
  const seed = fnv1a(fnv1a(2166136261, utf8(req.object.key)), [0]);
  const st = {
    candidates,
    onprem: labels.map((l) => want.values.has(l.get(want.label))),
    site: labels.map((l, i) => l.get('site') ?? `id:${candidates[i].id}`),
    score: candidates.map((c) => fnv1a(seed, utf8(c.id))),
    fragment:
      req.object.size == null ? 0 : Math.ceil(Number(req.object.size) / req.k),
    out: [],
    taken: new Set(),
    perSite: new Map(),
    onpremPlaced: 0,
  };
  for (let f = 0; f < width; f++) {
    const i = req.current[f];
    st.out.push(-1);
    if (i != null && i < candidates.length && !st.taken.has(i)) take(st, f, i);
  }
  for (let f = 0; f < width; f++) {
    if (st.out[f] >= 0) continue;
    const needOnprem = st.onpremPlaced < want.min;
    const pick = best(st, needOnprem);
    if (pick < 0) {
      const why = needOnprem
        ? `no healthy on-prem backend (${want.label} in ${Array.from(want.values).join(',')}) with room for fragment ${f}`
        : `not enough healthy backends with room: ${width} fragments needed`;
      log('warn', `onprem-one: ${req.object.key}: ${why}`);
      throw why;
    }
    take(st, f, pick);
  }
  return st.out;
}
