#!/usr/bin/env node
// bench/mint-many.mjs: N refresh tokens from the loopback test server, each from a grant of
// its own (a fresh login and consent through auth code + PKCE), printed one per line on
// stdout. The scale benchmark needs 10,000 (about 80 s with --parallel 32 on 2 cores: the
// server and this client share them); one process minting many at a time is much faster
// than one tests/oauth/mint.mjs run per token. Every token goes to stdout only, never to
// the command line or a log.
//
//   MINT_CLIENT_SECRET=... node bench/mint-many.mjs --issuer URL --client-id ID --count N
//                          [--scope "openid offline_access read write"] [--parallel 8]

import { createHash, randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';

import { browse, CookieJar, devInteractionsFill, discover, request } from '../tests/oauth/browser.mjs';

const { values: opt } = parseArgs({
  options: {
    issuer: { type: 'string' },
    'client-id': { type: 'string' },
    count: { type: 'string', default: '1' },
    scope: { type: 'string', default: 'openid offline_access read write' },
    parallel: { type: 'string', default: '8' },
  },
  strict: true,
});
const secret = process.env.MINT_CLIENT_SECRET;
if (!opt.issuer || !opt['client-id'] || secret === undefined) {
  process.stderr.write('mint-many: --issuer, --client-id and $MINT_CLIENT_SECRET are required\n');
  process.exit(2);
}
if (!(Number(opt.count) >= 0) || !(Number(opt.parallel) >= 1)) {
  process.stderr.write('mint-many: --count must be >= 0 and --parallel >= 1\n');
  process.exit(2);
}
const redirectUri = 'http://127.0.0.1/callback';
const b64 = (buf) => Buffer.from(buf).toString('base64url');
const basic = `Basic ${Buffer.from(`${encodeURIComponent(opt['client-id'])}:${encodeURIComponent(secret)}`)
  .toString('base64')}`;
const meta = await discover(opt.issuer);

async function mintOne(i) {
  const verifier = b64(randomBytes(32));
  const url = new URL(meta.authorization_endpoint);
  const q = {
    client_id: opt['client-id'],
    response_type: 'code',
    redirect_uri: redirectUri,
    scope: opt.scope,
    prompt: 'consent',
    code_challenge: b64(createHash('sha256').update(verifier).digest()),
    code_challenge_method: 'S256',
    state: b64(randomBytes(16)),
    nonce: b64(randomBytes(16)),
  };
  for (const [k, v] of Object.entries(q)) url.searchParams.set(k, v);
  const r = await browse(url.href, {
    jar: new CookieJar(),
    stopAt: (u) => u.origin === 'http://127.0.0.1' && u.pathname === '/callback',
    fill: devInteractionsFill(`bench-user-${i}`),
  });
  const code = r.redirect?.searchParams.get('code');
  if (!code) throw new Error(`mint ${i}: no authorization code`);
  const res = await request(meta.token_endpoint, {
    method: 'POST',
    headers: { authorization: basic, accept: 'application/json' },
    form: { grant_type: 'authorization_code', code, redirect_uri: redirectUri, code_verifier: verifier },
  });
  const body = await res.json();
  if (res.status !== 200 || !body.refresh_token) throw new Error(`mint ${i}: HTTP ${res.status} ${body.error ?? ''}`);
  return body.refresh_token;
}

const count = Number(opt.count);
const out = new Array(count);
let next = 0;
async function worker() {
  while (next < count) {
    const i = next;
    next += 1;
    out[i] = await mintOne(i);
  }
}
await Promise.all(Array.from({ length: Math.max(1, Number(opt.parallel)) }, worker));
process.stdout.write(`${out.join('\n')}\n`);
