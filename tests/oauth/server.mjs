#!/usr/bin/env node
// Real OAuth 2.0 / OpenID Connect server for tokend's integration tests (oidc-provider 9).
//
//   node tests/oauth/server.mjs [--port N] [--access-ttl S] [--refresh-ttl S]
//                               [--device-ttl S] [--lenient-client-auth] [--verbose]
//
// Listens on 127.0.0.1 over plain HTTP. Once listening it prints exactly one JSON line on
// stdout ({"ready":true,"issuer":...,"port":...}); everything else goes to stderr.
// Test hooks on the same port: GET /_test/stats, POST /_test/reset-stats,
// POST /_test/fail?count=N&status=S[&retry_after=SEC][&error=CODE].

import { execFileSync } from 'node:child_process';
import { createPrivateKey, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import { parseArgs } from 'node:util';

import { createMapAdapter } from './map_adapter.mjs';

/* oidc-provider prints its notices with console.info, i.e. on stdout, which is reserved for
 * the ready line. Send every console stream to stderr before the library is loaded. */
console.log = console.error;
console.info = console.error;
console.debug = console.error;
/* The strict client authentication check below reads request bodies ahead of the provider,
 * which the provider supports but warns about once; that warning is expected here. */
const warn = console.warn;
console.warn = (...args) => {
  if (String(args[0]).includes('already parsed request body detected')) return;
  warn(...args);
};

const { default: Provider, errors } = await import('oidc-provider');

const HOST = '127.0.0.1';
const DEVICE_CODE = 'urn:ietf:params:oauth:grant-type:device_code';
const GRANT_TYPES = ['authorization_code', 'refresh_token', DEVICE_CODE];
const TOKEN_PATH = '/token';
/* Endpoints where clients authenticate, relative to the issuer (oidc-provider's defaults). */
const CLIENT_AUTH_PATHS = new Set([TOKEN_PATH, '/token/introspection', '/token/revocation',
  '/device/auth', '/request']);
const MAX_BODY = 56 * 1024;

const CLIENTS = [
  { client_id: 'tokend-test', client_secret: 'test-secret', token_endpoint_auth_method: 'client_secret_basic' },
  { client_id: 'tokend-post', client_secret: 'post-secret', token_endpoint_auth_method: 'client_secret_post' },
  { client_id: 'tokend-public', token_endpoint_auth_method: 'none' },
];

function die(msg) {
  process.stderr.write(`server.mjs: ${msg}\n`);
  process.exit(2);
}

function parseCommandLine() {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        port: { type: 'string', default: '0' },
        'access-ttl': { type: 'string', default: '3600' },
        'refresh-ttl': { type: 'string', default: String(24 * 60 * 60) },
        'device-ttl': { type: 'string', default: String(10 * 60) },
        verbose: { type: 'boolean', default: false },
        'lenient-client-auth': { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    die(err.message);
  }
  if (values.help) {
    process.stderr.write('usage: node server.mjs [--port N] [--access-ttl SECONDS] '
      + '[--refresh-ttl SECONDS] [--device-ttl SECONDS] [--lenient-client-auth] [--verbose]\n');
    process.exit(0);
  }

  const int = (name, min, max) => {
    const raw = values[name];
    if (!/^\d+$/.test(raw)) die(`--${name} must be a non-negative integer, got "${raw}"`);
    const n = Number(raw);
    if (n < min || n > max) die(`--${name} must be between ${min} and ${max}`);
    return n;
  };

  return {
    port: int('port', 0, 65535),
    accessTtl: int('access-ttl', 1, 10 * 365 * 24 * 60 * 60),
    refreshTtl: int('refresh-ttl', 1, 10 * 365 * 24 * 60 * 60),
    /* Lifetime of a device_code (and its user_code): a short one lets a test see expired_token. */
    deviceTtl: int('device-ttl', 1, 24 * 60 * 60),
    verbose: values.verbose,
    lenientClientAuth: values['lenient-client-auth'],
  };
}

function freshStats() {
  return {
    grants: { refresh_token: 0, authorization_code: 0, [DEVICE_CODE]: 0 },
    refresh_errors: { invalid_grant: 0 },
    reuse_detected: 0,
    /* Not asked for by the contract, kept for debugging failing tests. */
    grant_errors: {},
    injected_failures: 0,
  };
}

function bump(obj, key) {
  obj[key] = (obj[key] ?? 0) + 1;
}

function grantTypeOf(ctx) {
  return ctx.oidc?.params?.grant_type ?? ctx.oidc?.body?.grant_type ?? 'unknown';
}

function esc(s) {
  return String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function page(title, inner) {
  return `<!DOCTYPE html><html><head><meta charset="utf-8"><title>${title}</title></head>`
    + `<body><h1>${title}</h1>${inner}</body></html>`;
}

function buildConfiguration(opts, adapter) {
  /* The signing key comes from openssl(1), not crypto.generateKeyPairSync(): node 20's
   * key generation job can deadlock when the garbage collector frees it (its destructor
   * takes a mutex under GC), which hung a server before it printed its ready line. The
   * key is a throwaway test key; it travels over a pipe only. */
  const pem = execFileSync('openssl', ['genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048'],
    { stdio: ['ignore', 'pipe', 'inherit'] });
  const privateKey = createPrivateKey(pem);
  const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: 'tokend-test-rs256', use: 'sig', alg: 'RS256' };

  /* 'native' (OIDC Dynamic Client Registration §2, application_type) makes oidc-provider
   * match a loopback http redirect URI ignoring its port, as RFC 8252 §7.3 requires: the
   * registered http://127.0.0.1/callback accepts http://127.0.0.1:ANY/callback. Host, path and
   * query must still match exactly (127.0.0.1 is not localhost). It also forces a consent
   * prompt on every authorization request, which tokend's flows always show anyway. */
  const clientBase = {
    application_type: 'native',
    grant_types: GRANT_TYPES,
    redirect_uris: ['http://127.0.0.1/callback'],
    response_types: ['code'],
  };

  /* A grant or session that outlives its refresh tokens would be harmless; one that dies
   * before them would make valid refresh tokens fail, so size them generously. */
  const longTtl = Math.max(14 * 24 * 60 * 60, opts.refreshTtl * 4);

  return {
    adapter,
    clients: CLIENTS.map((c) => ({ ...clientBase, ...c })),
    jwks: { keys: [signingKey] },
    cookies: { keys: [randomBytes(32).toString('hex')] },
    scopes: ['openid', 'offline_access', 'read', 'write', 'admin'],
    claims: { openid: ['sub'] },
    async findAccount(ctx, sub) {
      return { accountId: sub, async claims() { return { sub }; } };
    },
    /* Same rule as the library default, spelled out: a refresh token is issued exactly when
     * offline_access was granted to a client allowed to use the refresh_token grant. */
    async issueRefreshToken(ctx, client, source) {
      return client.grantTypeAllowed('refresh_token') && source.scopes.has('offline_access');
    },
    rotateRefreshToken: true,
    ttl: {
      AccessToken: opts.accessTtl,
      RefreshToken: opts.refreshTtl,
      AuthorizationCode: 60,
      DeviceCode: opts.deviceTtl,
      IdToken: 60 * 60,
      Interaction: 60 * 60,
      Session: longTtl,
      Grant: longTtl,
      ClientCredentials: 10 * 60,
    },
    features: {
      devInteractions: { enabled: true },
      introspection: {
        enabled: true,
        /* A client may introspect its own tokens; a confidential client any token. */
        async allowedPolicy(ctx, client, token) {
          return token.clientId === client.clientId || client.clientAuthMethod !== 'none';
        },
      },
      revocation: {
        enabled: true,
        /* RFC 7009 §2.1: only the client the token was issued to may revoke it. */
        async allowedPolicy(ctx, client, token) {
          if (token.clientId === client.clientId) return true;
          if (client.clientAuthMethod === 'none') return false;
          throw new errors.InvalidRequest('client is not authorized to revoke the presented token');
        },
      },
      deviceFlow: {
        enabled: true,
        async userCodeInputSource(ctx, form, out, err) {
          const msg = err ? `<p class="error">${esc(err.name)}: ${esc(out?.error ?? '')}</p>` : '';
          ctx.body = page('Enter device code', `${msg}${form}`);
        },
        async userCodeConfirmSource(ctx, form, client, deviceInfo, userCode) {
          ctx.body = page('Confirm device', `<p>${esc(client.clientId)} ${esc(userCode)}</p>${form}`);
        },
        async successSource(ctx) {
          ctx.body = page('Device approved', '<p id="device-approved">ok</p>');
        },
      },
      /* Off: with the library default (on, and no resource server configured) a `resource`
       * parameter is rejected with invalid_target. Off, it is ignored and access tokens are
       * always opaque and carry the plain (custom) scope. */
      resourceIndicators: { enabled: false },
      rpInitiatedLogout: { enabled: false },
    },
    async renderError(ctx, out) {
      ctx.type = 'json';
      ctx.body = out;
    },
  };
}

async function readFormBody(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > MAX_BODY) return null;
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/*
 * oidc-provider accepts client_secret_basic and client_secret_post interchangeably for a
 * client registered with either. tokend's tests want to catch a client that uses the wrong
 * one, so the registered method is enforced here, ahead of the provider. Returns the error
 * to send, or null; the body is read and handed on to the provider as ctx.request.body.
 */
async function checkClientAuthMethod(ctx) {
  if (!ctx.is('application/x-www-form-urlencoded')) return null;
  const raw = await readFormBody(ctx.req);
  if (raw === null) return { status: 413, error: 'invalid_request', error_description: 'request body too large' };
  ctx.request.body = raw;

  const form = new URLSearchParams(raw);
  let presented;
  let clientId;
  const authz = ctx.get('authorization');
  if (/^basic /i.test(authz)) {
    presented = 'client_secret_basic';
    const decoded = Buffer.from(authz.slice(6).trim(), 'base64').toString('utf8');
    const i = decoded.indexOf(':');
    if (i > 0) {
      try {
        clientId = decodeURIComponent(decoded.slice(0, i).replace(/\+/g, '%20'));
      } catch {
        return null; /* malformed: let the provider produce its own error */
      }
    }
  } else if (form.has('client_secret')) {
    presented = 'client_secret_post';
    clientId = form.get('client_id');
  } else {
    return null;
  }
  const registered = CLIENTS.find((c) => c.client_id === clientId)?.token_endpoint_auth_method;
  if (!registered || registered === presented || registered === 'none') return null;
  return {
    status: 401,
    error: 'invalid_client',
    error_description: `client authentication failed: ${presented} used, client registered for ${registered}`,
    grant_type: form.get('grant_type') ?? 'unknown',
  };
}

function installTestHooks(provider, state, opts) {
  const recordError = (gty, err) => {
    const code = err?.error ?? 'server_error';
    bump(state.stats.grant_errors[gty] ??= {}, code);
    if (gty === 'refresh_token') {
      bump(state.stats.refresh_errors, code);
      /* oidc-provider has no dedicated event for reuse: the refresh_token grant throws
       * InvalidGrant with this detail after destroying the token and revoking its grant. */
      if (code === 'invalid_grant' && err.error_detail === 'refresh token already used') {
        state.stats.reuse_detected += 1;
      }
    }
    if (opts.verbose) console.error(`token: ${gty} ${code} (${err?.error_detail ?? err?.error_description ?? ''})`);
  };

  /* Provider#use puts middleware ahead of the provider's own router. */
  provider.use(async (ctx, next) => {
    if (ctx.path.startsWith('/_test/')) {
      ctx.set('Cache-Control', 'no-store');
      if (ctx.method === 'GET' && ctx.path === '/_test/stats') {
        ctx.body = state.stats;
      } else if (ctx.method === 'POST' && ctx.path === '/_test/reset-stats') {
        state.stats = freshStats();
        ctx.body = state.stats;
      } else if (ctx.method === 'POST' && ctx.path === '/_test/fail') {
        const q = ctx.query;
        const num = (v, dflt, min, max) => {
          if (v === undefined) return dflt;
          if (typeof v !== 'string' || !/^\d+$/.test(v) || +v < min || +v > max) return NaN;
          return +v;
        };
        const count = num(q.count, 1, 0, 1e6);
        const status = num(q.status, 503, 400, 599);
        const retryAfter = num(q.retry_after, undefined, 0, 1e6);
        const error = q.error ?? (status >= 500 ? 'temporarily_unavailable' : 'invalid_request');
        if ([count, status, retryAfter].some(Number.isNaN) || typeof error !== 'string') {
          ctx.status = 400;
          ctx.body = { error: 'bad _test/fail parameters (count>=0, 400<=status<=599, retry_after>=0)' };
          return;
        }
        state.fail = { remaining: count, status, retryAfter, error };
        ctx.body = state.fail;
      } else {
        ctx.status = 404;
        ctx.body = { error: 'unknown test hook' };
      }
      return;
    }

    if (ctx.method === 'POST' && ctx.path === TOKEN_PATH && state.fail.remaining > 0) {
      state.fail.remaining -= 1;
      state.stats.injected_failures += 1;
      ctx.status = state.fail.status;
      if (state.fail.retryAfter !== undefined) ctx.set('Retry-After', String(state.fail.retryAfter));
      ctx.set('Cache-Control', 'no-store');
      ctx.body = { error: state.fail.error, error_description: 'failure injected by /_test/fail' };
      if (opts.verbose) console.error(`token: injected HTTP ${state.fail.status}`);
      return;
    }

    if (ctx.method === 'POST' && CLIENT_AUTH_PATHS.has(ctx.path) && !opts.lenientClientAuth) {
      const refused = await checkClientAuthMethod(ctx);
      if (refused) {
        const { status, grant_type: gty, ...body } = refused;
        ctx.status = status;
        ctx.set('Cache-Control', 'no-store');
        if (status === 401 && ctx.get('authorization')) {
          ctx.set('WWW-Authenticate', `Basic realm="${provider.issuer}", error="invalid_client"`);
        }
        ctx.body = body;
        if (ctx.path === TOKEN_PATH) recordError(gty, { error: body.error, error_detail: body.error_description });
        return;
      }
    }

    await next();
  });

  provider.on('grant.success', (ctx) => {
    const gty = grantTypeOf(ctx);
    bump(state.stats.grants, gty);
    if (opts.verbose) console.error(`token: ${gty} ok client=${ctx.oidc.client?.clientId}`);
  });

  const onError = (ctx, err) => recordError(grantTypeOf(ctx), err);
  provider.on('grant.error', onError);
  provider.on('server_error', (ctx, err) => {
    console.error('oidc-provider server_error:', err);
    if (ctx?.oidc?.route === 'token') onError(ctx, { error: 'server_error' });
  });
}

async function main() {
  const opts = parseCommandLine();
  const server = createServer();

  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, HOST, () => {
      server.off('error', reject);
      resolve();
    });
  }).catch((err) => die(`cannot listen on ${HOST}:${opts.port}: ${err.message}`));

  /* With --port 0 the issuer is known only after listen(); no request can arrive before the
   * handler is attached since nobody knows the port until the ready line is printed. */
  const { port } = server.address();
  const issuer = `http://${HOST}:${port}`;
  const { adapter, store } = createMapAdapter();
  const provider = new Provider(issuer, buildConfiguration(opts, adapter));
  const state = { stats: freshStats(), fail: { remaining: 0 } };
  installTestHooks(provider, state, opts);
  server.on('request', provider.callback());

  let stopping = false;
  const stop = (signal) => {
    if (stopping) return;
    stopping = true;
    if (opts.verbose) console.error(`server.mjs: ${signal}, exiting`);
    store.close();
    server.close(() => process.exit(0));
    server.closeAllConnections();
    setTimeout(() => process.exit(0), 2000).unref();
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));

  const line = `${JSON.stringify({ ready: true, issuer, port })}\n`;
  process.stdout.write(line);
}

await main();
