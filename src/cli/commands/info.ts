// mixlora info: which libtorch, BLAS, CPU capabilities, threads and CUDA devices this installation runs
// on, and with --probe how fast it multiplies matrices (the ceiling a training step can reach).
import { Command } from 'commander';
import { deviceArg, threadsArg } from '../options.js';

interface InfoOptions {
  json?: boolean;
  probe?: boolean;
  device: string;
  threads?: number;
}

const yesNo = (b: boolean): string => (b ? 'yes' : 'no');

export function infoCommand(): Command {
  return new Command('info')
    .description('show the numeric backend: libtorch version and origin, BLAS, CPU capabilities, threads, CUDA')
    .option('--json', 'print one JSON object')
    .option(
      '--probe',
      'also measure float32 and bfloat16 matrix-product throughput (GFLOP/s; seconds, more where bfloat16 lacks hardware support)',
    )
    .option('--device <device>', 'device of the --probe measurement: cpu, cuda or cuda:N', deviceArg(), 'cpu')
    .option('--threads <n>', 'CPU threads for libtorch (default: all cores)', threadsArg())
    .action(async (o: InfoOptions) => {
      const { backendInfo } = await import('../../tensor/backend-info.js');
      const { setNumThreads } = await import('../../tensor/runtime.js');
      const { parseDevice } = await import('../../tensor/targets.js');
      if (o.threads !== undefined) setNumThreads(o.threads);
      const device = parseDevice(o.device, '--device');
      const info = backendInfo();
      let probe = null;
      if (o.probe) {
        const { probeMatmul } = await import('../../tensor/matmul-probe.js');
        process.stderr.write(`mixlora info: measuring matrix products on ${device}...\n`);
        probe = probeMatmul(device);
      }
      if (o.json) {
        process.stdout.write(JSON.stringify({ ...info, ...(probe ?? {}) }) + '\n');
        return;
      }
      const lines = [
        `backend      ${info.backend}`,
        `libtorch     ${info.torch} from ${info.source}${info.libtorch_dir ? ` (${info.libtorch_dir})` : ''}`,
        `addon        ${info.addon} (${info.cuda_build ? 'CUDA' : 'CPU'} build)`,
        `BLAS         ${info.blas}${info.openblas_core ? `, kernels ${info.openblas_core}` : ''}`,
        ...(info.openblas_core ? [`             ${info.openblas_note}`] : []),
        `linear       ${info.linear === 'onednn' ? 'float32 projections through oneDNN (MIXLORA_GEMM=aten: through the BLAS)' : `through ATen (${info.blas})`}`,
        `small rows   ${info.small_gemm === 'off' ? 'products of 1-16 rows as above' : `products of 1-16 rows outside autograd through mixlora's ${info.small_gemm === 'avx512' ? 'AVX-512' : 'AVX2'} kernel (MIXLORA_GEMM=onednn: as above)`}`,
        `malloc       ${info.host_allocator === 'reuse' ? 'freed memory kept for reuse (MIXLORA_MALLOC=default: glibc as configured)' : 'glibc as configured'}`,
        `CPU          ${info.cpu_model}`,
        `             AVX2 ${yesNo(info.cpu_flags.avx2)}, AVX-512 ${yesNo(info.cpu_flags.avx512)}, ` +
          `AVX-512 BF16 ${yesNo(info.cpu_flags.avx512_bf16)}, AMX ${yesNo(info.cpu_flags.amx)}; ` +
          `libtorch kernels: ${info.torch_cpu_capability ?? 'unknown'}`,
        `bfloat16     ${info.bf16_compute === 'float32' ? 'computes in float32 over bfloat16 weights' : 'computes in bfloat16'} on the CPU: ${info.bf16_compute_reason}`,
        `             (oneDNN bfloat16 ${info.cpu_bf16.onednnBf16 === null ? 'unknown' : yesNo(info.cpu_bf16.onednnBf16)}; --bf16-compute, MIXLORA_BF16_COMPUTE: native or float32)`,
        `threads      ${info.threads} (of ${info.cores} cores)`,
        `CUDA         ${info.cuda_available ? `${info.cuda_devices} device(s)` : info.cuda_build ? 'no device found' : 'not in this build'}`,
        `collectives  Gloo${info.nccl_build ? `, NCCL ${info.nccl_version} (CUDA tensors)` : info.cuda_build ? ' (no NCCL in this build)' : ''}`,
      ];
      if (probe) {
        lines.push(
          `matmul       ${probe.gflops_fp32.toFixed(0)} GFLOP/s float32, ${probe.gflops_bf16.toFixed(0)} GFLOP/s bfloat16 ` +
            `(${probe.size}×${probe.size} products on ${device})`,
        );
      }
      process.stdout.write(lines.join('\n') + '\n');
    });
}
