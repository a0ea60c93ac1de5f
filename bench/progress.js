'use strict';
/**
 * Progress of a benchmark run on stderr: a cli-progress bar on a terminal, one line per step
 * otherwise (logs, CI), nothing when quiet.
 */
const cliProgress = require('cli-progress');

/**
 * `total` steps. Returns { step(label), note(message), stop() }: step() advances by one and
 * names what runs next; note() prints a line without breaking the bar.
 */
function progress(total, { title = 'bench', quiet = false, stream = process.stderr } = {}) {
  let done = 0;
  if (quiet) return { step() {}, note() {}, stop() {} };
  if (!stream.isTTY) {
    return {
      step(label) {
        done++;
        stream.write(`[${title}] ${done}/${total} ${label}\n`);
      },
      note(message) {
        stream.write(`[${title}] ${message}\n`);
      },
      stop() {},
    };
  }
  const bar = new cliProgress.SingleBar(
    {
      stream,
      format: `${title} [{bar}] {value}/{total} | {eta_formatted} left | {label}`,
      hideCursor: true,
      clearOnComplete: false,
      etaBuffer: 8,
    },
    cliProgress.Presets.shades_classic,
  );
  bar.start(total, 0, { label: 'starting' });
  return {
    step(label) {
      bar.increment(1, { label });
    },
    note(message) {
      // Clear the bar's line, print, and let the next update redraw it.
      stream.write(`\r\x1b[2K[${title}] ${message}\n`);
      bar.render();
    },
    stop() {
      bar.stop();
    },
  };
}

module.exports = { progress };
