// Plain Map-backed storage adapter for oidc-provider, for tests only.
//
// oidc-provider's built-in memory adapter is an LRU capped at about 1,000 entries, so a long
// test run silently loses valid refresh tokens. This one keeps every entry until it expires
// (or the process exits). Payloads are deep-copied on the way in and out so the provider never
// shares an object with the store, as a real database adapter would behave.

const SWEEP_INTERVAL_MS = 60 * 1000;
/* A device code outlives its expiry by this much, as with oidc-provider's own memory adapter
 * (which keeps every entry for its clockTolerance, 15 s by default): the device_code grant
 * answers expired_token (RFC 8628 §3.5) only for a code it still finds; a code that is gone
 * gets invalid_grant. */
const DEVICE_CODE_GRACE_SEC = 15;

function expired(entry, now) {
  return entry.expiresAt <= now;
}

class MapStore {
  constructor() {
    this.models = new Map();   // model name -> Map(id -> { payload, expiresAt })
    this.grants = new Map();   // grantId -> Map(model name -> Set(id))
    this.uids = new Map();     // Session uid -> Session id
    this.userCodes = new Map(); // DeviceCode user code -> DeviceCode id
    this.sweeper = setInterval(() => this.sweep(), SWEEP_INTERVAL_MS);
    this.sweeper.unref();
  }

  table(model) {
    let t = this.models.get(model);
    if (!t) {
      t = new Map();
      this.models.set(model, t);
    }
    return t;
  }

  get(model, id) {
    const t = this.models.get(model);
    const entry = t?.get(id);
    if (!entry) return undefined;
    if (expired(entry, Date.now())) {
      this.remove(model, id);
      return undefined;
    }
    return entry;
  }

  set(model, id, payload, expiresAt) {
    this.remove(model, id);
    this.table(model).set(id, { payload, expiresAt });

    /* The Grant model's own id is the grant id; everything else points at its grant. */
    if (model !== 'Grant' && typeof payload.grantId === 'string') {
      let byModel = this.grants.get(payload.grantId);
      if (!byModel) {
        byModel = new Map();
        this.grants.set(payload.grantId, byModel);
      }
      let ids = byModel.get(model);
      if (!ids) {
        ids = new Set();
        byModel.set(model, ids);
      }
      ids.add(id);
    }
    if (model === 'Session' && payload.uid) this.uids.set(payload.uid, id);
    if (typeof payload.userCode === 'string') this.userCodes.set(payload.userCode, id);
  }

  remove(model, id) {
    const t = this.models.get(model);
    const entry = t?.get(id);
    if (!entry) return;
    t.delete(id);

    const { payload } = entry;
    if (typeof payload.grantId === 'string') {
      const byModel = this.grants.get(payload.grantId);
      const ids = byModel?.get(model);
      if (ids) {
        ids.delete(id);
        if (ids.size === 0) byModel.delete(model);
        if (byModel.size === 0) this.grants.delete(payload.grantId);
      }
    }
    if (model === 'Session' && payload.uid && this.uids.get(payload.uid) === id) {
      this.uids.delete(payload.uid);
    }
    if (typeof payload.userCode === 'string' && this.userCodes.get(payload.userCode) === id) {
      this.userCodes.delete(payload.userCode);
    }
  }

  removeByGrant(model, grantId) {
    const ids = this.grants.get(grantId)?.get(model);
    if (!ids) return;
    for (const id of [...ids]) this.remove(model, id);
  }

  sweep() {
    const now = Date.now();
    for (const [model, t] of this.models) {
      for (const [id, entry] of t) {
        if (expired(entry, now)) this.remove(model, id);
      }
    }
  }

  close() {
    clearInterval(this.sweeper);
  }
}

class MapAdapter {
  constructor(model, store) {
    this.model = model;
    this.store = store;
  }

  async upsert(id, payload, expiresIn) {
    const grace = this.model === 'DeviceCode' ? DEVICE_CODE_GRACE_SEC : 0;
    const expiresAt = typeof expiresIn === 'number' && Number.isFinite(expiresIn)
      ? Date.now() + (expiresIn + grace) * 1000
      : Infinity;
    this.store.set(this.model, id, structuredClone(payload), expiresAt);
  }

  async find(id) {
    const entry = this.store.get(this.model, id);
    return entry ? structuredClone(entry.payload) : undefined;
  }

  async findByUid(uid) {
    const id = this.store.uids.get(uid);
    return id === undefined ? undefined : this.find(id);
  }

  async findByUserCode(userCode) {
    const id = this.store.userCodes.get(userCode);
    return id === undefined ? undefined : this.find(id);
  }

  async consume(id) {
    const entry = this.store.get(this.model, id);
    if (entry) entry.payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) {
    this.store.remove(this.model, id);
  }

  async revokeByGrantId(grantId) {
    this.store.removeByGrant(this.model, grantId);
  }
}

/*
 * Returns { adapter, store }: pass `adapter` as the provider's `adapter` option (a factory
 * called with a model name); `store` is exposed for tests and must be closed on shutdown.
 */
export function createMapAdapter() {
  const store = new MapStore();
  return {
    adapter: (model) => new MapAdapter(model, store),
    store,
  };
}
