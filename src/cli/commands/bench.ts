// mixlora bench: training-step latency and peak memory of a method on a preset model (random weights).
import { Command, Option } from 'commander';
import { UsageError } from '../../util/errors.js';
import { bf16ComputeOption, intArg, quantizeArg, deviceArg, threadsArg } from '../options.js';
import type { StepProfile } from '../../bench/step-profile.js';
import type { PresetName } from '../../bench/benchmark.js';

function formatProfile(p: StepProfile): string {
  const lines = [`one profiled step: ${p.wallMs.toFixed(1)} ms`];
  for (const f of p.families) {
    lines.push(
      `  ${f.family.padEnd(36)} ${f.ms.toFixed(1).padStart(9)} ms  ${(f.share * 100).toFixed(1).padStart(5)}%`,
    );
  }
  lines.push('  top ops by self time (forward and backward):');
  for (const o of p.ops.slice(0, 10)) {
    lines.push(`    ${o.name.padEnd(44)} ${o.selfMs.toFixed(1).padStart(9)} ms  ${String(o.calls).padStart(6)} calls`);
  }
  return lines.join('\n') + '\n';
}

export function benchCommand(): Command {
  return new Command('bench')
    .description(
      'time training steps of LoRA/DoRA/MixLoRA/MixDoRA on a LLaMA-shaped preset with random weights (median step after a warm-up, peak memory)',
    )
    .addOption(
      new Option(
        '--preset <name>',
        'model shape (random weights): llama-58m = vocab 32000, hidden 512, intermediate 1376, 8 layers, 8 heads, ' +
          'float32, batch 4 × 256; llama-1b = TinyLlama-1.1B (hidden 2048, intermediate 5632, 22 layers, 32 heads, 4 KV heads), ' +
          'bfloat16, batch 2 × 64; llama2-7b = LLaMA-2-7B (hidden 4096, intermediate 11008, 32 layers, 32 heads), ' +
          'bfloat16, batch 4 × 512; llama2-13b and llama2-70b = LLaMA-2-13B and -70B (GPUs, --plan); ' +
          'llama-tiny = hidden 128, 2 layers, vocab 2048, bfloat16, batch 2 × 64',
      )
        .choices(['llama-58m', 'llama-1b', 'llama2-7b', 'llama2-13b', 'llama2-70b', 'llama-tiny'])
        .default('llama-58m'),
    )
    .addOption(
      new Option(
        '--method <method>',
        'adapter method (paper settings: LoRA/DoRA r 80; MixLoRA/MixDoRA r 16, 8 experts, top-2); required but with --plan',
      ).choices(['lora', 'dora', 'mixlora', 'mixdora']),
    )
    .option('--batch <n>', "rows per adapter (default: the preset's)", intArg('--batch', 1))
    .option('--seq <n>', "tokens per row (default: the preset's)", intArg('--seq', 2))
    .addOption(
      new Option(
        '--dtype <dtype>',
        "the frozen base's dtype (default: the preset's), and its matmuls' unless --bf16-compute says otherwise; " +
          'adapters, optimizer state, router and losses stay float32',
      ).choices(['float32', 'bfloat16']),
    )
    .addOption(bf16ComputeOption())
    .option('--fused <n>', 'train N adapters of the method together', intArg('--fused', 1), 1)
    .addOption(
      new Option('--optimizer <name>', "each adapter's optimizer: adamw, or adamw8bit (8-bit blockwise moments)")
        .choices(['adamw', 'adamw8bit'])
        .default('adamw'),
    )
    .option('--steps <n>', 'timed steps (the median is reported)', intArg('--steps', 1), 5)
    .option('--warmup <n>', 'untimed steps first', intArg('--warmup', 0), 2)
    .option('--recompute', 'recompute activations per layer in the backward pass')
    .option(
      '--shard-base',
      'under mixlora launch: each rank keeps 1/W of the frozen base and gathers each layer around its use ' +
        '(shard_base; needs --recompute)',
    )
    .option(
      '--shard-optimizer',
      "under mixlora launch: each rank keeps AdamW's state for its share of the adapters' parameters only " +
        '(shard_optimizer, ZeRO stage 1)',
    )
    .option(
      '--plan',
      "with --shard-base: print the frozen base's bytes per rank for 1, 2, 4 and 8 ranks (the preset's dtype, " +
        '--dtype, --quantize) without allocating anything',
    )
    .option(
      '--optimizer-in-backward',
      "with --recompute: each layer's optimizer update runs in the backward pass and frees its gradients",
    )
    .option(
      '--scored <n>',
      'score only the last N tokens of each row (an instruction-tuning batch: the rest is prompt)',
      intArg('--scored', 1),
    )
    .option(
      '--profile',
      'after the timed steps, record one more step op by op and print its time by op family (GEMM, attention, ' +
        'router and gather/scatter, elementwise, copies and casts, loss, autograd engine, optimizer, host)',
    )
    .option(
      '--quantize <format>',
      'keep the base projections quantised: nf4 or int8 (default: not quantised)',
      quantizeArg(),
    )
    .option('--device <device>', 'cpu, cuda or cuda:N', deviceArg(), 'cpu')
    .option('--threads <n>', 'CPU threads for libtorch (default: all cores)', threadsArg())
    .option(
      '--json',
      'print one JSON line: method, fused, optimizer, optimizer_in_backward, preset, batch, seq, dtype, compute_dtype and compute_reason, device, ms_per_step, ms_per_token, tokens_per_s, ' +
        'peak_rss_mib, peak_cuda_allocated_mib, peak_cuda_reserved_mib (null on CPU), model_flops_per_token, model_tflops, ' +
        'ranks, collective_ms_per_step and collective_backend (nccl or gloo; under mixlora launch, null alone), quantize, base_mib (bytes of the frozen base), ' +
        'rss_after_base_mib, shard_base, shard_optimizer (and profile: wallMs, families, ops with --profile); with --plan: the plan as JSON',
    )
    .action(
      async (o: {
        preset: PresetName;
        batch?: number;
        seq?: number;
        dtype?: 'float32' | 'bfloat16';
        bf16Compute?: 'auto' | 'native' | 'float32';
        method?: 'lora' | 'dora' | 'mixlora' | 'mixdora';
        fused: number;
        optimizer: 'adamw' | 'adamw8bit';
        steps: number;
        warmup: number;
        recompute?: boolean;
        shardBase?: boolean;
        shardOptimizer?: boolean;
        plan?: boolean;
        optimizerInBackward?: boolean;
        profile?: boolean;
        scored?: number;
        device: string;
        quantize?: string;
        threads?: number;
        json?: boolean;
      }) => {
        if (o.plan) {
          if (!o.shardBase) throw new UsageError('--plan needs --shard-base (it plans the sharded base)');
          const { printShardPlan } = await import('../../bench/shard-plan-report.js');
          const { parseQuantFormat } = await import('../../quant/format.js');
          process.stdout.write(
            printShardPlan(
              o.preset,
              o.dtype,
              o.quantize === undefined ? null : parseQuantFormat(o.quantize),
              o.json ?? false,
            ),
          );
          return;
        }
        if (!o.method) throw new UsageError("required option '--method <method>' not specified");
        const method = o.method;
        if (o.shardBase && !o.recompute)
          throw new UsageError(
            '--shard-base needs --recompute (without it the backward keeps every gathered layer: the whole base)',
          );
        const { runTrainBench } = await import('../../bench/benchmark.js');
        const { setNumThreads } = await import('../../tensor/runtime.js');
        const { parseDevice } = await import('../../tensor/targets.js');
        const { parseQuantFormat } = await import('../../quant/format.js');
        const { createProgress } = await import('../progress.js');
        const { readDistEnv } = await import('../../distributed/env.js');
        const { describeGroup, joinGroup, leaveGroup } = await import('../../distributed/group.js');
        const { rankDevice } = await import('../../distributed/backend.js');
        if (o.shardOptimizer && o.optimizerInBackward)
          throw new UsageError(
            '--shard-optimizer cannot be combined with --optimizer-in-backward (one process steps in the backward)',
          );
        if (o.optimizerInBackward && !o.recompute)
          throw new UsageError(
            '--optimizer-in-backward needs --recompute (the update runs after each recomputed layer)',
          );
        if (o.threads !== undefined) setNumThreads(o.threads);
        // Under `mixlora launch`: every rank runs the batch (--device cuda: on cuda:LOCAL_RANK) and the
        // gradients are summed; rank 0 reports.
        const env = readDistEnv();
        const device = rankDevice(o.device, env);
        const group = joinGroup(env, device);
        const progress = createProgress({ quiet: group.rank !== 0 });
        if (group.backend !== 'none') progress.log(describeGroup(group, device));
        const bar = progress.bar(`${method}${o.fused > 1 ? ` ×${o.fused}` : ''}`, o.warmup + o.steps);
        const result = runTrainBench({
          preset: o.preset,
          method,
          fused: o.fused,
          optimizer: o.optimizer,
          steps: o.steps,
          warmup: o.warmup,
          recompute: o.recompute ?? false,
          shardBase: o.shardBase ?? false,
          shardOptimizer: o.shardOptimizer ?? false,
          optimizerInBackward: o.optimizerInBackward ?? false,
          scored: o.scored ?? null,
          device: parseDevice(device, '--device'),
          ...(o.batch ? { batch: o.batch } : {}),
          ...(o.seq ? { seq: o.seq } : {}),
          ...(o.dtype ? { dtype: o.dtype } : {}),
          ...(o.bf16Compute ? { bf16Compute: o.bf16Compute } : {}),
          quantize: o.quantize === undefined ? null : parseQuantFormat(o.quantize),
          onStep: (i) => bar.update(i),
          group,
          profile: o.profile ?? false,
        });
        bar.stop();
        progress.stop();
        leaveGroup(group);
        if (group.rank !== 0) return;
        if (o.json) {
          const { trainable_parameters, recompute, scored, ...rest } = result;
          process.stdout.write(JSON.stringify({ ...rest, trainable_parameters, recompute, scored }) + '\n');
        } else {
          process.stdout.write(
            `${result.method}${result.fused > 1 ? ` fused ×${result.fused}` : ''} on ${o.preset}: ${result.ms_per_step.toFixed(1)} ms/step, ${(result.ms_per_token * 1000).toFixed(1)} µs/token, ` +
              `${Math.round(result.tokens_per_s)} tokens/s, ${result.model_tflops.toFixed(2)} model TFLOP/s, peak RSS ${Math.round(result.peak_rss_mib)} MiB` +
              (result.peak_cuda_allocated_mib !== null
                ? `, peak CUDA ${Math.round(result.peak_cuda_allocated_mib)} MiB allocated / ${Math.round(result.peak_cuda_reserved_mib!)} MiB reserved`
                : '') +
              (result.collective_ms_per_step !== null
                ? `, ${result.collective_ms_per_step.toFixed(1)} ms/step in collectives over ${result.ranks} ranks (${result.collective_backend})`
                : '') +
              `, base ${Math.round(result.base_mib)} MiB${result.quantize ? ` (${result.quantize})` : ''}${result.shard_base ? ' held by each rank (shard_base)' : ''}` +
              `, ${result.trainable_parameters.toLocaleString('en-US')} trainable parameters (batch ${result.batch} × ${result.seq}, ${result.dtype}${result.compute_dtype !== result.dtype ? `, computing in ${result.compute_dtype}` : ''})\n`,
          );
          if (result.profile) process.stdout.write(formatProfile(result.profile));
        }
      },
    );
}
