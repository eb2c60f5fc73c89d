// mixlora train: fine-tune one or more adapters together, as a JSON or YAML config describes.
import { Command } from 'commander';
import { threadsArg } from '../options.js';
import type { Device } from '../../tensor/tensor.js';

export function trainCommand(): Command {
  return new Command('train')
    .description(
      'fine-tune LoRA/DoRA/MixLoRA/MixDoRA adapters together over one frozen base model (config: JSON or YAML; see docs/training-config.md)',
    )
    .argument('<config>', 'training config file')
    .option('--resume', "continue from the newest complete checkpoint in the config's output_dir")
    .option('--threads <n>', 'CPU threads for libtorch (default: all cores)', threadsArg())
    .option('--quiet', 'no progress on stderr')
    .action(async (file: string, o: { resume?: boolean; threads?: number; quiet?: boolean }) => {
      const { readTrainConfig } = await import('../../train/config.js');
      const { train } = await import('../../train/trainer.js');
      const { setNumThreads } = await import('../../tensor/runtime.js');
      const { createProgress, downloadProgress } = await import('../progress.js');
      const { resolveModel } = await import('../../models/hub.js');
      const { readDistEnv } = await import('../../distributed/env.js');
      const { describeGroup, joinGroup, leaveGroup } = await import('../../distributed/group.js');
      const { rankDevice } = await import('../../distributed/backend.js');
      const cfg = readTrainConfig(file);
      if (o.threads !== undefined) setNumThreads(o.threads);
      // Under a launcher (WORLD_SIZE > 1): join the job, each rank of a CUDA run on its own device
      // (cuda:LOCAL_RANK, with NCCL when the addon has it); rank 0 alone reports and writes.
      const env = readDistEnv();
      const device = rankDevice(cfg.device, env);
      const group = joinGroup(env, device);
      const lead = group.rank === 0;
      const progress = createProgress({ quiet: o.quiet || !lead });
      if (group.backend !== 'none') progress.log(describeGroup(group, device));
      try {
        const modelPath = await resolveModel(cfg.baseModel, { progress: downloadProgress(progress, cfg.baseModel) });
        const result = await train(cfg, {
          resume: o.resume ?? false,
          progress: lead ? progress : undefined,
          modelPath,
          group,
          ...(device !== cfg.device ? { device: device as Device } : {}),
        });
        progress.stop();
        leaveGroup(group);
        if (!lead) return;
        const lines = Object.entries(result.outputs).map(([name, dir]) => `adapter ${name}: ${dir}`);
        lines.push(`metrics: ${result.metricsFile}`, `loss curve: ${result.charts.join(', ')}`);
        process.stdout.write(lines.join('\n') + '\n');
      } finally {
        progress.stop();
      }
    });
}
