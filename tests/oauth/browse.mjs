#!/usr/bin/env node
// Plays the user's browser in an authorization code flow started by someone else (tokend's
// loopback login): opens the authorization URL at the test server, signs in and consents through
// devInteractions (or cancels with --deny), then follows the provider's final redirect to the
// client's redirect_uri, which is tokend's loopback listener, and prints that response.
//
//   node browse.mjs --url AUTHORIZATION_URL [--login SUB] [--deny] [--tamper-state]
//                   [--print-redirect]
//
// Output on stdout:
//   default           the listener's status line ("HTTP/1.1 200 OK"), then its body
//   --print-redirect  the redirect URL, one line; the listener is not contacted
// --deny cancels at the consent page; the provider then redirects with error=access_denied,
// which is followed like any other redirect. --tamper-state replaces the state parameter of the
// redirect (or adds one) before it is followed or printed.
// Exit status: 0 once the redirect was printed or the listener answered (whatever its status);
// 1 when the provider refused (an error page instead of a redirect) or the listener could not
// be reached; 2 on a usage error. Messages go to stderr.

import { request as httpRequest } from 'node:http';
import { parseArgs } from 'node:util';

import { BrowserError, browse, CookieJar, devInteractionsFill } from './browser.mjs';

const LISTENER_TIMEOUT_MS = 10_000;
const MAX_LISTENER_BODY = 64 * 1024;

class UsageError extends Error {}

function options() {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        url: { type: 'string' },
        login: { type: 'string', default: 'tokend-user' },
        deny: { type: 'boolean', default: false },
        'tamper-state': { type: 'boolean', default: false },
        'print-redirect': { type: 'boolean', default: false },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    throw new UsageError(err.message);
  }
  if (!values.url) throw new UsageError('--url is required');
  let url;
  try {
    url = new URL(values.url);
  } catch {
    throw new UsageError(`--url is not a URL: ${values.url}`);
  }
  const redirectUri = url.searchParams.get('redirect_uri');
  if (!redirectUri) throw new UsageError('the authorization URL has no redirect_uri');
  let redirect;
  try {
    redirect = new URL(redirectUri);
  } catch {
    throw new UsageError(`redirect_uri is not a URL: ${redirectUri}`);
  }
  return { ...values, url, redirect };
}

/* The devInteractions pages link their cancel action as "[ Cancel ]" (GET
 * /interaction/UID/abort); the provider answers it by redirecting to the client with
 * error=access_denied. */
function cancelLink(html, base) {
  for (const m of html.matchAll(/<a\b[^>]*\bhref="([^"]*)"[^>]*>\s*\[\s*Cancel\s*\]\s*<\/a>/gi)) {
    return new URL(m[1].replace(/&amp;/g, '&'), base).href;
  }
  return null;
}

/* Runs the provider's pages to the redirect back to the client. */
async function authorize(opts) {
  const jar = new CookieJar();
  /* RFC 8252 §7.3: the port of a loopback redirect varies, so compare what the provider must
   * keep exactly: scheme, host, port of this request, and path. */
  const stopAt = (u) => u.origin === opts.redirect.origin && u.pathname === opts.redirect.pathname;
  const loginFill = devInteractionsFill(opts.login);
  let consentUrl = null;

  let result = await browse(opts.url.href, {
    jar,
    stopAt,
    fill(form, html) {
      if (opts.deny && form.fields.prompt === 'consent') {
        consentUrl = cancelLink(html, form.action);
        return null; /* stop here; the cancel link is followed below */
      }
      return loginFill(form);
    },
  });

  if (opts.deny && !result.redirect) {
    if (!consentUrl) {
      throw new BrowserError(`--deny: no consent page with a cancel link; last page: ${snippet(result.html)}`);
    }
    result = await browse(consentUrl, { jar, stopAt, fill: () => null });
  }
  if (!result.redirect) {
    throw new BrowserError(`the provider did not redirect to ${opts.redirect.href}; last page `
      + `(HTTP ${result.status}): ${snippet(result.html)}`);
  }
  return result.redirect;
}

function snippet(html) {
  return String(html ?? '').replace(/\s+/g, ' ').slice(0, 300);
}

function tamper(redirect) {
  const u = new URL(redirect.href);
  const state = u.searchParams.get('state');
  /* Same length and alphabet as the original, so only the comparison can reject it. */
  const forged = state
    ? [...state].map((c) => (c === 'A' ? 'B' : 'A')).join('')
    : 'tampered-state';
  u.searchParams.set('state', forged);
  return u;
}

/* GET on the listener with node:http rather than fetch, to report the status line as sent
 * (HTTP version, code and reason phrase). */
function getListener(url) {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { method: 'GET', headers: { accept: 'text/html, */*' } }, (res) => {
      const chunks = [];
      let size = 0;
      res.on('data', (chunk) => {
        size += chunk.length;
        if (size > MAX_LISTENER_BODY) {
          req.destroy(new Error(`response body over ${MAX_LISTENER_BODY} bytes`));
          return;
        }
        chunks.push(chunk);
      });
      res.on('end', () => resolve({
        statusLine: `HTTP/${res.httpVersion} ${res.statusCode} ${res.statusMessage ?? ''}`.trimEnd(),
        body: Buffer.concat(chunks).toString('utf8'),
      }));
      res.on('error', (err) => reject(new BrowserError(`GET ${url.href}: ${err.message}`)));
    });
    req.setTimeout(LISTENER_TIMEOUT_MS, () => req.destroy(new Error('timed out')));
    req.on('error', (err) => reject(new BrowserError(`GET ${url.href}: ${err.message}`)));
    req.end();
  });
}

async function main() {
  const opts = options();
  let redirect = await authorize(opts);
  if (opts['tamper-state']) redirect = tamper(redirect);
  if (opts['print-redirect']) {
    process.stdout.write(`${redirect.href}\n`);
    return;
  }
  const { statusLine, body } = await getListener(redirect);
  process.stdout.write(`${statusLine}\n${body}${body.endsWith('\n') || body === '' ? '' : '\n'}`);
}

try {
  await main();
} catch (err) {
  if (err instanceof UsageError) {
    process.stderr.write(`browse.mjs: ${err.message}\n`);
    process.exitCode = 2;
  } else if (err instanceof BrowserError) {
    process.stderr.write(`browse.mjs: ${err.message}\n`);
    process.exitCode = 1;
  } else {
    throw err;
  }
}
