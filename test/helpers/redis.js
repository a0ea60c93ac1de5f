'use strict';
// A real redis-server for the queue tests: started on a free loopback port, without persistence,
// and stopped after (also when the test process exits early).
const net = require('node:net');
const { spawn, spawnSync } = require('node:child_process');

const running = new Set();
process.on('exit', () => { for (const p of running) p.kill('SIGKILL'); });

/** A port nothing listens on now: the OS picks one for a socket that is closed at once. */
function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

function requireRedis() {
  const r = spawnSync('redis-server', ['--version'], { encoding: 'utf8' });
  if (r.error) throw new Error('redis-server is not installed: apt-get install redis-server (scripts/setup.sh does)');
  return r.stdout.trim();
}

/** Starts redis-server; resolves {url, port, stop()} once it accepts connections. */
async function startRedis() {
  requireRedis();
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePort();
    const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--loglevel', 'warning'],
      { stdio: ['ignore', 'pipe', 'pipe'] });
    running.add(child);
    let out = '';
    child.stdout.on('data', (c) => { out += c; });
    child.stderr.on('data', (c) => { out += c; });
    const exited = new Promise((resolve) => child.on('exit', (code, signal) => { running.delete(child); resolve({ code, signal }); }));
    // Ready when it answers PING; a port taken meanwhile makes it exit, and another port is tried.
    const up = await Promise.race([waitForPing(port), exited.then(() => false)]);
    if (up) {
      return {
        port,
        url: `redis://127.0.0.1:${port}`,
        stop: async () => {
          child.kill('SIGTERM');
          await exited;
        },
      };
    }
    if (!/Address already in use/i.test(out)) throw new Error(`redis-server did not start: ${out.trim()}`);
  }
  throw new Error('redis-server found no free port in 5 tries');
}

async function waitForPing(port, timeoutMs = 10_000) {
  const t0 = Date.now();
  while (Date.now() - t0 < timeoutMs) {
    const ok = await new Promise((resolve) => {
      const s = net.connect(port, '127.0.0.1');
      s.once('error', () => resolve(false));
      s.once('data', (d) => { s.destroy(); resolve(String(d).startsWith('+PONG')); });
      s.once('connect', () => s.write('PING\r\n'));
    });
    if (ok) return true;
    await new Promise((r) => setTimeout(r, 20));
  }
  return false;
}

module.exports = { startRedis, freePort };
