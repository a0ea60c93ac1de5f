/** `evit info`: which native backends this build has and which one is used. */
import { loadBinding } from '../native';
import { version } from './args';

export const usage = `  evit info                                         show the native backends`;

export async function run(): Promise<number> {
  const b = loadBinding().backendInfo();
  const lines = [
    `evit ${version()} (Node ${process.version}, ${process.platform}-${process.arch})`,
    `cpu:  available, ${b.cpu.threads} threads, ${b.cpu.simd} kernels, ${b.cpu.blas}`,
    b.cuda.available
      ? `cuda: available, ${b.cuda.devices.map((d) => `${d.name} (sm ${d.computeCapability})`).join(', ')}`
      : `cuda: not used: ${b.cuda.reason}`,
  ];
  for (const d of b.cuda.devices) lines.push(`      device ${d.name}, compute ${d.computeCapability}, ${(d.memoryBytes / 2 ** 30).toFixed(1)} GiB`);
  process.stdout.write(lines.join('\n') + '\n');
  return 0;
}
