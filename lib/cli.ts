#!/usr/bin/env node
/**
 * The `evit` command line. Each subcommand lives in lib/commands/<name>.ts and
 * exports `usage` (one line), optionally `help`, and `run(argv)` returning the
 * exit code.
 */
import { EvitError, OptionsError } from './errors';
import { UsageError, version } from './commands/args';
import * as classify from './commands/classify';
import * as info from './commands/info';
import * as inspect from './commands/inspect';
import * as convert from './commands/convert';
import * as visualize from './commands/visualize';
import * as serve from './commands/serve';
import * as worker from './commands/worker';

interface Command {
  usage: string;
  help?: string;
  run(argv: string[]): Promise<number>;
}

const COMMANDS: Record<string, Command> = {
  classify,
  info,
  inspect,
  convert,
  visualize,
  serve,
  worker,
};

function usage(): string {
  const lines = ['Usage:', ...Object.values(COMMANDS).map((c) => c.usage), '  evit --version | --help'];
  for (const c of Object.values(COMMANDS)) if (c.help) lines.push('', c.help);
  return lines.join('\n');
}

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  try {
    if (cmd === undefined || cmd === '--help' || cmd === '-h' || cmd === 'help') {
      process.stdout.write(usage() + '\n');
      return cmd === undefined ? 2 : 0;
    }
    if (cmd === '--version' || cmd === '-v') {
      process.stdout.write(version() + '\n');
      return 0;
    }
    const command = Object.hasOwn(COMMANDS, cmd) ? COMMANDS[cmd] : undefined;
    if (!command) throw new UsageError(`unknown command ${JSON.stringify(cmd)}`);
    return await command.run(rest);
  } catch (err) {
    if (err instanceof UsageError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      process.stderr.write(`evit: ${(err as Error).message}\n\n${usage()}\n`);
      return 2;
    }
    if (err instanceof EvitError) {
      process.stderr.write(`evit: ${err.message} [${err.code}]\n`);
      return err instanceof OptionsError ? 2 : 1;
    }
    process.stderr.write(`evit: unexpected error: ${(err as Error).stack ?? String(err)}\n`);
    return 1;
  }
}

if (require.main === module) {
  void main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  });
}
