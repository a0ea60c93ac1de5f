'use strict';
// Runs every tape test file in its own process and ends with "N passed, N failed".
const { runTapeFiles } = require('./helpers/runTapeFiles');

const { passed, failed } = runTapeFiles(__dirname, process.argv.slice(2));
console.log(`${passed} passed, ${failed} failed`);
process.exitCode = failed > 0 ? 1 : 0;
