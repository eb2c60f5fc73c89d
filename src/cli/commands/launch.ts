// mixlora launch: runs `mixlora train` (or `eval`) as several processes of one data-parallel job on
// this machine, and joins other machines that run the same command with their own --node-rank.
import os from 'node:os';
import path from 'node:path';
import { Command } from 'commander';
import { intArg } from '../options.js';
import { UsageError } from '../../util/errors.js';
import { packageRoot } from '../../util/package.js';

/** The commands that know how to split their work across ranks. */
const LAUNCHABLE = ['train', 'eval', 'bench'];

interface LaunchFlags {
  nprocPerNode: number;
  nnodes: number;
  nodeRank: number;
  masterAddr?: string;
  masterPort?: number;
  oversubscribe?: boolean;
}

export function launchCommand(): Command {
  return new Command('launch')
    .description(
      'run `train`, `eval` or `bench` as a data-parallel job: N processes on this machine (and M machines), joined over PyTorch c10d',
    )
    .usage('--nproc-per-node N [--nnodes M --node-rank R --master-addr A --master-port P] train CONFIG [--resume]')
    .requiredOption(
      '--nproc-per-node <n>',
      'processes (ranks) to start on this machine',
      intArg('--nproc-per-node', 1, 1024),
    )
    .option('--nnodes <m>', 'machines in the job', intArg('--nnodes', 1, 65536), 1)
    .option(
      '--node-rank <r>',
      "this machine's index, 0 to nnodes-1 (rank 0's machine is 0)",
      intArg('--node-rank', 0),
      0,
    )
    .option(
      '--master-addr <addr>',
      'address of node 0, where rank 0 serves the rendezvous (default: $MASTER_ADDR or 127.0.0.1)',
    )
    .option(
      '--master-port <port>',
      'its port (default: $MASTER_PORT, or a free port when --nnodes is 1)',
      intArg('--master-port', 1, 65535),
    )
    .option(
      '--oversubscribe',
      'start more ranks than this machine has cores (CPU ranks) or CUDA devices (ranks with device cuda), which is refused otherwise',
    )
    .argument('<command...>', 'the mixlora command each rank runs, with its arguments (train CONFIG [--resume])')
    .passThroughOptions()
    .allowUnknownOption()
    .action(async (command: string[], o: LaunchFlags) => {
      if (!LAUNCHABLE.includes(command[0]!))
        throw new UsageError(
          `mixlora launch runs ${LAUNCHABLE.slice(0, -1).join(', ')} or ${LAUNCHABLE.at(-1)}, not '${command[0]}'`,
        );
      if (o.nodeRank >= o.nnodes) throw new UsageError(`--node-rank ${o.nodeRank} must be below --nnodes ${o.nnodes}`);
      const envPort = process.env.MASTER_PORT ? intArg('MASTER_PORT', 1, 65535)(process.env.MASTER_PORT) : null;
      const { launch, launchedDevice, tooManyRanks } = await import('../../distributed/launcher.js');
      if (!o.oversubscribe) {
        const device = launchedDevice(command);
        let cudaDevices = 0;
        if (device.startsWith('cuda')) {
          // the addon only for CUDA ranks: it is what says how many devices this machine has
          const { cuda } = await import('../../tensor/runtime.js');
          cudaDevices = cuda.isAvailable() ? cuda.deviceCount() : 0;
        }
        const tooMany = tooManyRanks(o.nprocPerNode, device, { cores: os.availableParallelism(), cudaDevices });
        if (tooMany) throw new UsageError(tooMany);
      }
      process.exitCode = await launch({
        nprocPerNode: o.nprocPerNode,
        nnodes: o.nnodes,
        nodeRank: o.nodeRank,
        masterAddr: o.masterAddr ?? (process.env.MASTER_ADDR?.trim() || '127.0.0.1'),
        masterPort: o.masterPort ?? envPort,
        command,
        entry: path.join(packageRoot(), 'bin', 'mixlora'),
        log: (line) => process.stderr.write(line + '\n'),
      });
    });
}
