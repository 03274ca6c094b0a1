'use strict';
// The conversation every client adapter of this directory speaks with the Python suite
// (compat-tests/python/adapterkit.py; the Rust adapter, compat-tests/rust, speaks it too): one
// JSON command per line on stdin,
//   {"id": 7, "op": "publish", ...arguments}
// and one JSON reply per line on stdout, once the command is done:
//   {"id": 7, "ok": true, "result": {...}}   or   {"id": 7, "ok": false, "error": "...", "code": ...}
// Commands run concurrently (a test may wait for messages on one client while another
// publishes), so replies can come out of order; the id pairs them. stdout carries nothing
// else: whatever a library logs goes to stderr, which the suite keeps for failure messages.
// At the end of stdin the adapter's `close` runs and the process exits.
//
// For a reproduction by hand, commands can be given as arguments instead, one JSON object each;
// they then run one after the other and each reply is printed:
//   node mqttjs.js '{"op":"connect","host":"127.0.0.1","port":1883}' '{"op":"end"}'
//
// An adapter is a table of async handlers, `op -> (args) => result`, plus `close`:
//   require('./adapter').serve({ publish: async (args) => ({...}), close: async () => {} })

const readline = require('node:readline');

// Keep stdout for replies only: libraries that log through console.log / info / warn write to
// stderr instead.
const toStderr = (...args) => process.stderr.write(args.map(String).join(' ') + '\n');
console.log = toStderr;
console.info = toStderr;
console.warn = toStderr;
console.debug = toStderr;

function reply(message) {
  process.stdout.write(JSON.stringify(message) + '\n');
}

async function run(handlers, command) {
  const { id = null, op, ...args } = command;
  const handler = Object.hasOwn(handlers, op) ? handlers[op] : undefined;
  if (typeof handler !== 'function' || op === 'close') {
    return { id, ok: false, error: `unknown op ${JSON.stringify(op)}`, code: 'unknown-op' };
  }
  try {
    const result = await handler(args);
    return { id, ok: true, result: result === undefined ? {} : result };
  } catch (e) {
    return { id, ok: false, error: describe(e), code: errorCode(e) };
  }
}

// A library error as a line a test failure can show: its class, message and any code.
function describe(e) {
  if (!(e instanceof Error)) return String(e);
  const name = e.name && e.name !== 'Error' ? `${e.name}: ` : '';
  return `${name}${e.message}`;
}

function errorCode(e) {
  if (e && typeof e === 'object') {
    for (const key of ['code', 'type', 'reasonCode']) {
      if (e[key] !== undefined && e[key] !== null) return e[key];
    }
  }
  return null;
}

async function closeQuietly(handlers) {
  if (typeof handlers.close !== 'function') return;
  try {
    await handlers.close();
  } catch (e) {
    process.stderr.write(`close: ${describe(e)}\n`);
  }
}

function serve(handlers) {
  process.on('unhandledRejection', (e) => process.stderr.write(`unhandled rejection: ${describe(e)}\n`));
  const given = process.argv.slice(2);
  if (given.length > 0) {
    (async () => {
      for (const text of given) reply(await run(handlers, JSON.parse(text)));
      await closeQuietly(handlers);
      process.exit(0);
    })();
    return;
  }
  const pending = new Set();
  const lines = readline.createInterface({ input: process.stdin });
  lines.on('line', (line) => {
    if (!line.trim()) return;
    let command;
    try {
      command = JSON.parse(line);
    } catch (e) {
      reply({ id: null, ok: false, error: `not JSON: ${line}`, code: 'bad-command' });
      return;
    }
    const done = run(handlers, command).then(reply);
    pending.add(done);
    done.finally(() => pending.delete(done));
  });
  lines.on('close', async () => {
    await Promise.allSettled([...pending]);
    await closeQuietly(handlers);
    process.exit(0);
  });
}

// Resolves when `predicate()` holds, re-checked whenever `notify` is called; resolves with
// false after `timeoutMs`. The adapters' way of waiting for deliveries without polling.
class Waiters {
  constructor() {
    this.waiting = new Set();
  }

  until(predicate, timeoutMs) {
    if (predicate()) return Promise.resolve(true);
    return new Promise((resolve) => {
      const entry = { predicate, resolve };
      entry.timer = setTimeout(() => {
        this.waiting.delete(entry);
        resolve(false);
      }, timeoutMs);
      this.waiting.add(entry);
    });
  }

  notify() {
    for (const entry of [...this.waiting]) {
      if (entry.predicate()) {
        clearTimeout(entry.timer);
        this.waiting.delete(entry);
        entry.resolve(true);
      }
    }
  }
}

// Payloads cross the JSON boundary as UTF-8 text; the tests only send text.
const text = (buffer) =>
  buffer === null || buffer === undefined ? null : Buffer.from(buffer).toString('utf8');

module.exports = { serve, Waiters, text };
