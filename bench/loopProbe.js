'use strict';
/**
 * Preloaded (`node -r bench/loopProbe.js ...`) into each server the serving benchmark
 * starts, so evit and its peer are measured alike: perf_hooks.monitorEventLoopDelay
 * samples the event loop every 10 ms; on SIGUSR2 the process prints the delay since the
 * previous SIGUSR2 (p50, p99, max in ms, beyond the 10 ms timer period), the event loop's
 * utilisation, the process's CPU seconds and its RSS on stderr as one `loop-probe {json}`
 * line, and starts a new window.
 */
const { monitorEventLoopDelay, performance } = require('node:perf_hooks');

const RESOLUTION_MS = 10;
const h = monitorEventLoopDelay({ resolution: RESOLUTION_MS });
h.enable();
const ms = (ns) => Math.max(0, ns / 1e6 - RESOLUTION_MS);
let elu = performance.eventLoopUtilization();
let cpu = process.cpuUsage();
process.on('SIGUSR2', () => {
  // Utilisation (share of wall time the loop was busy) and process CPU time do not depend on how
  // much of the machine other processes take; the delay does.
  const window = performance.eventLoopUtilization(elu);
  const used = process.cpuUsage(cpu);
  elu = performance.eventLoopUtilization();
  cpu = process.cpuUsage();
  const stats = {
    samples: h.count, p50: ms(h.percentile(50)), p99: ms(h.percentile(99)), max: ms(h.max),
    utilization: window.utilization, cpuSeconds: (used.user + used.system) / 1e6, rss: process.memoryUsage.rss(),
  };
  process.stderr.write(`loop-probe ${JSON.stringify(stats)}\n`);
  h.reset();
});
