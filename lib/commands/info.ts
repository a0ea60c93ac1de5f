/** `evit info`: which native backends this build has, and which one a model loaded now would use. */
import { resolveDevice } from '../device';
import { EvitError } from '../errors';
import { loadBinding } from '../native';
import { version } from './args';

export const usage = `  evit info                                         show the native backends and which one is used`;

export async function run(): Promise<number> {
  const b = loadBinding().backendInfo();
  const cuda = b.cuda;
  const runtime = (v: number) => `${Math.floor(v / 1000)}.${Math.floor((v % 1000) / 10)}`;
  const lines = [
    `evit ${version()} (Node ${process.version}, ${process.platform}-${process.arch})`,
    `cpu:  available, ${b.cpu.threads} threads, ${b.cpu.simd} kernels, ${b.cpu.blas}`,
    !cuda.compiled
      ? `cuda: not built: ${cuda.reason}`
      : cuda.available
        ? `cuda: available (runtime ${runtime(cuda.runtimeVersion)}, driver ${runtime(cuda.driverVersion)}), runs on device 0`
        : `cuda: not usable: ${cuda.reason}`,
  ];
  cuda.devices.forEach((d, i) =>
    lines.push(`      device ${i}: ${d.name}, compute ${d.computeCapability}, ${(d.memoryBytes / 2 ** 30).toFixed(1)} GiB`));
  let status = 0;
  try {
    // The same resolution loadModel() does without a device option.
    const choice = resolveDevice(undefined, cuda);
    const from = choice.source === 'EVIT_DEVICE' ? `EVIT_DEVICE=${choice.requested}` : "device 'auto'";
    const why = choice.reason && choice.requested !== 'cpu' ? `: ${choice.reason}` : '';
    lines.push(`backend: ${choice.backend} (${from}${why})`);
  } catch (err) {
    if (!(err instanceof EvitError)) throw err;
    lines.push(`backend: none: ${err.message}`);
    status = 1;
  }
  process.stdout.write(lines.join('\n') + '\n');
  return status;
}
