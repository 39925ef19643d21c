// Minimal headless "browser" for driving oidc-provider's devInteractions pages in tests:
// a cookie jar, an HTML form scraper and a loop that follows redirects and submits forms.
// Only what the provider's own pages need; not a general HTML parser.

const MAX_STEPS = 25;
const TIMEOUT_MS = 10_000;

export class BrowserError extends Error {}

function decodeEntities(s) {
  return s.replace(/&(#x[0-9a-f]+|#\d+|amp|lt|gt|quot|apos);/gi, (m, e) => {
    const lower = e.toLowerCase();
    if (lower === 'amp') return '&';
    if (lower === 'lt') return '<';
    if (lower === 'gt') return '>';
    if (lower === 'quot') return '"';
    if (lower === 'apos') return "'";
    if (lower.startsWith('#x')) return String.fromCodePoint(parseInt(lower.slice(2), 16));
    return String.fromCodePoint(parseInt(lower.slice(1), 10));
  });
}

function attributes(tag) {
  const attrs = {};
  const re = /([a-zA-Z_:][-a-zA-Z0-9_:.]*)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'=<>`]+)))?/g;
  /* Skip the element name itself. */
  const body = tag.replace(/^<\s*[a-zA-Z]+/, '').replace(/\/?>$/, '');
  for (const m of body.matchAll(re)) {
    attrs[m[1].toLowerCase()] = decodeEntities(m[2] ?? m[3] ?? m[4] ?? '');
  }
  return attrs;
}

/* Returns the first <form> of the page as { action, method, fields, names } or null. */
export function parseForm(html, baseUrl) {
  const m = /<form\b[^>]*>([\s\S]*?)<\/form>/i.exec(html);
  if (!m) return null;
  const formTag = /<form\b[^>]*>/i.exec(m[0])[0];
  const fa = attributes(formTag);
  const fields = {};
  const names = new Set();
  for (const input of m[1].matchAll(/<input\b[^>]*>/gi)) {
    const a = attributes(input[0]);
    if (!a.name) continue;
    names.add(a.name);
    if ((a.type ?? 'text').toLowerCase() === 'hidden' || a.value !== undefined) {
      fields[a.name] = a.value ?? '';
    }
  }
  return {
    action: new URL(fa.action || baseUrl, baseUrl).href,
    method: (fa.method || 'get').toUpperCase(),
    fields,
    names,
  };
}

/* Cookies of one origin, matched by path (RFC 6265 §5.1.4). Attributes other than Path,
 * Expires and Max-Age are ignored: everything here is the same loopback host. */
export class CookieJar {
  constructor() {
    this.cookies = new Map(); // `${path}\n${name}` -> { name, value, path }
  }

  store(url, setCookieHeaders) {
    const reqPath = new URL(url).pathname;
    for (const header of setCookieHeaders) {
      const [pair, ...attrs] = header.split(';');
      const eq = pair.indexOf('=');
      if (eq <= 0) continue;
      const name = pair.slice(0, eq).trim();
      const value = pair.slice(eq + 1).trim();
      let path = reqPath.slice(0, reqPath.lastIndexOf('/')) || '/';
      let expired = false;
      for (const attr of attrs) {
        const i = attr.indexOf('=');
        const key = (i < 0 ? attr : attr.slice(0, i)).trim().toLowerCase();
        const val = i < 0 ? '' : attr.slice(i + 1).trim();
        if (key === 'path' && val.startsWith('/')) path = val;
        if (key === 'max-age' && Number(val) <= 0) expired = true;
        if (key === 'expires' && Date.parse(val) <= Date.now()) expired = true;
      }
      const key = `${path}\n${name}`;
      if (expired) this.cookies.delete(key);
      else this.cookies.set(key, { name, value, path });
    }
  }

  header(url) {
    const reqPath = new URL(url).pathname;
    const matches = [...this.cookies.values()].filter(({ path }) => reqPath === path
      || (reqPath.startsWith(path) && (path.endsWith('/') || reqPath[path.length] === '/')));
    /* Longer paths first, as browsers do. */
    matches.sort((a, b) => b.path.length - a.path.length);
    return matches.map(({ name, value }) => `${name}=${value}`).join('; ');
  }
}

export async function request(url, { method = 'GET', headers = {}, form, jar } = {}) {
  const h = { ...headers };
  const cookie = jar?.header(url);
  if (cookie) h.cookie = cookie;
  let body;
  if (form) {
    body = new URLSearchParams(form).toString();
    h['content-type'] = 'application/x-www-form-urlencoded';
  }
  let res;
  try {
    res = await fetch(url, {
      method, headers: h, body, redirect: 'manual', signal: AbortSignal.timeout(TIMEOUT_MS),
    });
  } catch (err) {
    throw new BrowserError(`${method} ${url}: ${err.cause?.message ?? err.message}`);
  }
  jar?.store(url, res.headers.getSetCookie());
  return res;
}

/*
 * Starts with GET startUrl and keeps following redirects and submitting the page's first form
 * until one of:
 *  - a redirect whose target satisfies stopAt(url): resolves { redirect: URL }
 *  - a page without a form, or fill() returning null: resolves { html, status }
 * fill(form, html) returns the fields to submit (usually form.fields plus a few).
 */
export async function browse(startUrl, { jar, stopAt, fill }) {
  let url = startUrl;
  let method = 'GET';
  let form;
  for (let step = 0; step < MAX_STEPS; step += 1) {
    const res = await request(url, { method, form, jar });
    if ([301, 302, 303, 307, 308].includes(res.status)) {
      const location = res.headers.get('location');
      if (!location) throw new BrowserError(`${method} ${url}: HTTP ${res.status} without Location`);
      await res.arrayBuffer();
      const next = new URL(location, url);
      if (stopAt(next)) return { redirect: next };
      if (res.status === 301 || res.status === 302 || res.status === 303) {
        method = 'GET';
        form = undefined;
      }
      url = next.href;
      continue;
    }

    const html = await res.text();
    if (res.status >= 400) {
      throw new BrowserError(`${method} ${url}: HTTP ${res.status}: ${html.slice(0, 500)}`);
    }
    const parsed = parseForm(html, url);
    const fields = parsed ? fill(parsed, html) : null;
    if (!fields) return { html, status: res.status };
    url = parsed.action;
    method = parsed.method;
    form = fields;
    if (method === 'GET') {
      const u = new URL(url);
      for (const [k, v] of Object.entries(fields)) u.searchParams.set(k, v);
      url = u.href;
      form = undefined;
    }
  }
  throw new BrowserError(`gave up after ${MAX_STEPS} steps, last at ${url}`);
}

/* Fills oidc-provider devInteractions' login and consent forms (any login/password works). */
export function devInteractionsFill(login) {
  return (form) => {
    const fields = { ...form.fields };
    if (fields.prompt === 'login') {
      fields.login = login;
      fields.password = 'any-password';
    }
    return fields;
  };
}

export async function discover(issuer) {
  const url = `${issuer.replace(/\/$/, '')}/.well-known/openid-configuration`;
  const res = await request(url);
  if (res.status !== 200) throw new BrowserError(`discovery ${url}: HTTP ${res.status}`);
  const meta = await res.json();
  if (meta.issuer !== issuer) {
    throw new BrowserError(`discovery: issuer is "${meta.issuer}", expected "${issuer}"`);
  }
  return meta;
}
