#!/usr/bin/env node
// Plays the user's side of the device authorization grant (RFC 8628) against the test
// server: opens the verification page for a user code, confirms it (or aborts with --deny),
// signs in and consents through devInteractions. Exit 0 when the provider shows its
// success (or, with --deny, abort) page; otherwise a message on stderr and exit 1.
//
//   node device-approve.mjs --issuer URL --user-code CODE [--login SUB] [--deny]

import { parseArgs } from 'node:util';

import {
  BrowserError, browse, CookieJar, devInteractionsFill, discover,
} from './browser.mjs';

async function main() {
  const { values } = parseArgs({
    options: {
      issuer: { type: 'string' },
      'user-code': { type: 'string' },
      login: { type: 'string', default: 'tokend-user' },
      deny: { type: 'boolean', default: false },
    },
    strict: true,
    allowPositionals: false,
  });
  if (!values.issuer || !values['user-code']) {
    throw new BrowserError('--issuer and --user-code are required');
  }

  const meta = await discover(values.issuer);
  /* oidc-provider's verification page lives at <issuer>/device; discovery does not list it. */
  const start = new URL(`${values.issuer}/device`);
  start.searchParams.set('user_code', values['user-code']);

  const loginFill = devInteractionsFill(values.login);
  let submittedCode = false;
  const result = await browse(start.href, {
    jar: new CookieJar(),
    stopAt: () => false,
    fill(form) {
      if (form.names.has('confirm') || form.names.has('abort')) {
        const fields = { ...form.fields };
        if (values.deny) {
          delete fields.confirm;
          fields.abort = 'yes';
        }
        return fields;
      }
      if (form.names.has('user_code') && form.fields.xsrf !== undefined
          && !form.names.has('prompt')) {
        /* The code input page comes back, with an error, when the code was refused;
         * submit the code once, never loop on it. */
        if (submittedCode) return null;
        submittedCode = true;
        return { ...form.fields, user_code: values['user-code'] };
      }
      return loginFill(form);
    },
  });

  const html = result.html ?? '';
  if (!values.deny && html.includes('id="device-approved"')) return;
  if (values.deny && html.includes('AbortedError')) return;
  throw new BrowserError(`unexpected final page (HTTP ${result.status}) from ${meta.issuer}: `
    + `${html.replace(/\s+/g, ' ').slice(0, 300)}`);
}

try {
  await main();
} catch (err) {
  if (!(err instanceof BrowserError) && !String(err?.code).startsWith('ERR_PARSE_ARGS')) throw err;
  process.stderr.write(`device-approve.mjs: ${err.message}\n`);
  process.exitCode = 1;
}
