#!/usr/bin/env node
// Mints a refresh token by running a real authorization code + PKCE (S256) flow against the
// test server, headlessly: devInteractions' login and consent pages are submitted with fetch
// and a cookie jar, the code is exchanged at the token endpoint, and the refresh token is
// printed on stdout (one line). Any failure: message on stderr, exit status 1.
//
//   node mint.mjs --issuer URL --client-id ID [--client-secret S] [--auth basic|post|none]
//   (the client secret may instead come from $MINT_CLIENT_SECRET)
//                 [--scope "openid offline_access read write"] [--login SUB]
//                 [--redirect-uri URI] [--print-json]

import { createHash, randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';

import {
  BrowserError, browse, CookieJar, devInteractionsFill, discover, request,
} from './browser.mjs';

class MintError extends Error {}

function b64url(buf) {
  return Buffer.from(buf).toString('base64url');
}

function options() {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        issuer: { type: 'string' },
        'client-id': { type: 'string' },
        'client-secret': { type: 'string' },
        auth: { type: 'string' },
        scope: { type: 'string', default: 'openid offline_access read write' },
        login: { type: 'string', default: 'tokend-user' },
        'redirect-uri': { type: 'string', default: 'http://127.0.0.1/callback' },
        'print-json': { type: 'boolean', default: false },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    throw new MintError(err.message);
  }
  // The secret may come from the environment, so it stays off command lines.
  if (values['client-secret'] === undefined && process.env.MINT_CLIENT_SECRET !== undefined) {
    values['client-secret'] = process.env.MINT_CLIENT_SECRET;
  }
  if (!values.issuer) throw new MintError('--issuer is required');
  if (!values['client-id']) throw new MintError('--client-id is required');
  const auth = values.auth ?? (values['client-secret'] !== undefined ? 'basic' : 'none');
  if (!['basic', 'post', 'none'].includes(auth)) throw new MintError('--auth must be basic, post or none');
  if (auth !== 'none' && values['client-secret'] === undefined) {
    throw new MintError(`--auth ${auth} needs --client-secret`);
  }
  return { ...values, auth };
}

/* RFC 6749 §2.3.1: id and secret are form-urlencoded before being joined for Basic auth. */
function basicAuth(id, secret) {
  const enc = (s) => encodeURIComponent(s).replace(/%20/g, '+');
  return `Basic ${Buffer.from(`${enc(id)}:${enc(secret)}`).toString('base64')}`;
}

async function authorize(opts, meta) {
  const verifier = b64url(randomBytes(32));
  const challenge = b64url(createHash('sha256').update(verifier).digest());
  const state = b64url(randomBytes(16));
  const redirectUri = new URL(opts['redirect-uri']);

  const url = new URL(meta.authorization_endpoint);
  const params = {
    client_id: opts['client-id'],
    response_type: 'code',
    redirect_uri: opts['redirect-uri'],
    scope: opts.scope,
    /* oidc-provider silently drops offline_access (so: no refresh token) without it. */
    prompt: 'consent',
    code_challenge: challenge,
    code_challenge_method: 'S256',
    state,
  };
  if (opts.scope.split(' ').includes('openid')) params.nonce = b64url(randomBytes(16));
  for (const [k, v] of Object.entries(params)) url.searchParams.set(k, v);

  const result = await browse(url.href, {
    jar: new CookieJar(),
    stopAt: (u) => u.origin === redirectUri.origin && u.pathname === redirectUri.pathname,
    fill: devInteractionsFill(opts.login),
  });
  if (!result.redirect) {
    throw new MintError(`authorization did not come back to the redirect URI; last page: ${result.html.slice(0, 300)}`);
  }

  const q = result.redirect.searchParams;
  if (q.get('error')) {
    throw new MintError(`authorization failed: ${q.get('error')}: ${q.get('error_description') ?? ''}`);
  }
  if (q.get('state') !== state) throw new MintError('authorization response state mismatch');
  if (q.has('iss') && q.get('iss') !== meta.issuer) {
    throw new MintError(`authorization response iss "${q.get('iss')}" is not the issuer`);
  }
  const code = q.get('code');
  if (!code) throw new MintError('authorization response has no code');
  return { code, verifier };
}

async function exchange(opts, meta, { code, verifier }) {
  const form = {
    grant_type: 'authorization_code',
    code,
    redirect_uri: opts['redirect-uri'],
    code_verifier: verifier,
  };
  const headers = { accept: 'application/json' };
  if (opts.auth === 'basic') {
    headers.authorization = basicAuth(opts['client-id'], opts['client-secret']);
  } else {
    form.client_id = opts['client-id'];
    if (opts.auth === 'post') form.client_secret = opts['client-secret'];
  }

  const res = await request(meta.token_endpoint, { method: 'POST', headers, form });
  const text = await res.text();
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    throw new MintError(`token endpoint: HTTP ${res.status}, not JSON: ${text.slice(0, 300)}`);
  }
  if (res.status !== 200) {
    throw new MintError(`token endpoint: HTTP ${res.status}: ${body.error ?? ''}: ${body.error_description ?? ''}`);
  }
  return body;
}

async function main() {
  const opts = options();
  const meta = await discover(opts.issuer);
  const tokens = await exchange(opts, meta, await authorize(opts, meta));
  if (opts['print-json']) {
    process.stdout.write(`${JSON.stringify(tokens)}\n`);
    return;
  }
  if (!tokens.refresh_token) {
    throw new MintError(`no refresh token issued (granted scope: "${tokens.scope ?? ''}"); `
      + 'the scope must include offline_access and the client must allow refresh_token');
  }
  process.stdout.write(`${tokens.refresh_token}\n`);
}

try {
  await main();
} catch (err) {
  if (!(err instanceof MintError || err instanceof BrowserError)) throw err;
  process.stderr.write(`mint.mjs: ${err.message}\n`);
  process.exitCode = 1;
}
