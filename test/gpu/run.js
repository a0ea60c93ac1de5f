'use strict';
// `npm run test:gpu`: the CUDA backend against the CPU backend. Without a usable CUDA device it
// fails at once, saying why (a GPU suite that passes by skipping everything would prove nothing).
const { loadBinding } = require('../../dist/native');
const { runTapeFiles } = require('../helpers/runTapeFiles');

const cuda = loadBinding().backendInfo().cuda;
if (!cuda.available) {
  process.stderr.write(
    '\n*** test:gpu FAILED: the CUDA backend cannot run here ***\n' +
      `    reason: ${cuda.reason}\n` +
      `    addon built with CUDA: ${cuda.compiled}; driver ${cuda.driverVersion}, runtime ${cuda.runtimeVersion}\n` +
      '    Run this suite on a machine with an NVIDIA GPU of compute capability 8.0 or newer\n' +
      '    (tools/gpu-check.sh does the build, this suite, the sanitizers and the benchmark in one go).\n\n',
  );
  process.exit(2);
}
for (const d of cuda.devices) console.log(`# device: ${d.name}, compute ${d.computeCapability}, ${(d.memoryBytes / 2 ** 30).toFixed(1)} GiB`);

const { passed, failed, failures } = runTapeFiles(__dirname, process.argv.slice(2));
console.log(`\n${passed} passed, ${failed} failed`);
if (failures.length) console.log(`failed checks:\n  ${failures.join('\n  ')}`);
process.exitCode = failed > 0 ? 1 : 0;
