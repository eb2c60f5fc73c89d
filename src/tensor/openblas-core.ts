// OpenBLAS picks its kernels by recognising the CPU. An OpenBLAS older than the CPU (Debian 12 ships
// 0.3.21) does not recognise it and falls back to generic kernels ("Prescott": SSE3 only), several times
// slower at matrix products than the hardware allows. OPENBLAS_CORETYPE, read once when the library
// loads, forces a kernel family. Before the addon (and so OpenBLAS) loads, we compare the core OpenBLAS
// chose on its own with what the CPU's flags support and, when it fell back, choose the family the
// flags support. A user's own OPENBLAS_CORETYPE is always kept.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

/** Capability tiers of OpenBLAS's x86-64 kernel families: what instructions their kernels use. */
export enum SimdTier {
  Sse = 1,
  Avx = 2,
  Avx2 = 3,
  Avx512 = 4,
}

// OpenBLAS core names (lower case, as openblas_get_corename() returns them) by the tier of their kernels.
const CORE_TIERS: Record<string, SimdTier> = {
  sandybridge: SimdTier.Avx,
  bulldozer: SimdTier.Avx,
  piledriver: SimdTier.Avx,
  steamroller: SimdTier.Avx,
  haswell: SimdTier.Avx2,
  zen: SimdTier.Avx2,
  excavator: SimdTier.Avx2,
  skylakex: SimdTier.Avx512,
  cooperlake: SimdTier.Avx512,
  sapphirerapids: SimdTier.Avx512,
};

/** The tier of an OpenBLAS core name; every name not listed is an SSE-era core (Prescott, Core2, Nehalem...). */
export function coreTier(core: string): SimdTier {
  return CORE_TIERS[core.toLowerCase()] ?? SimdTier.Sse;
}

/** The best tier the CPU flags (as in /proc/cpuinfo) support, and the OpenBLAS core type for it. */
export function bestCoreForFlags(flags: Set<string>): { tier: SimdTier; coretype: string | null } {
  const all = (...names: string[]) => names.every((n) => flags.has(n));
  // SkylakeX kernels use AVX-512 F/BW/VL/DQ; Cooperlake adds the BF16 GEMM (same float32 kernels).
  if (all('avx512f', 'avx512bw', 'avx512vl', 'avx512dq')) {
    return { tier: SimdTier.Avx512, coretype: flags.has('avx512_bf16') ? 'Cooperlake' : 'SkylakeX' };
  }
  if (all('avx2', 'fma')) return { tier: SimdTier.Avx2, coretype: 'Haswell' };
  if (flags.has('avx')) return { tier: SimdTier.Avx, coretype: 'Sandybridge' };
  return { tier: SimdTier.Sse, coretype: null };
}

/** The CPU's model name and flags from /proc/cpuinfo (empty on systems without it). */
export function readCpuInfo(file = '/proc/cpuinfo'): { model: string; flags: Set<string> } {
  let text = '';
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return { model: '', flags: new Set() };
  }
  const model = /^model name\s*:\s*(.*)$/m.exec(text)?.[1]?.trim() ?? '';
  const flags = new Set((/^flags\s*:\s*(.*)$/m.exec(text)?.[1] ?? '').trim().split(/\s+/).filter(Boolean));
  return { model, flags };
}

export interface CoreChoice {
  /** What OpenBLAS picked on its own (null: libtorch is not linked with OpenBLAS, or the probe failed). */
  detected: string | null;
  /** The OPENBLAS_CORETYPE mixlora set, or null when it set none. */
  chosen: string | null;
  /** Why: one line for `mixlora info`. */
  reason: string;
}

interface ProbeCache {
  cpu: string;
  addon: string;
  addonMtime: number;
  core: string | null;
}

/** The decision, as a pure function of what the probe saw and the CPU flags. */
export function decideCoreType(detected: string | null, flags: Set<string>): CoreChoice {
  if (detected === null) return { detected, chosen: null, reason: 'libtorch does not use OpenBLAS' };
  const best = bestCoreForFlags(flags);
  if (best.coretype && coreTier(detected) < best.tier) {
    return {
      detected,
      chosen: best.coretype,
      reason: `OpenBLAS fell back to ${detected} kernels on this CPU; using ${best.coretype} (OPENBLAS_CORETYPE)`,
    };
  }
  return { detected, chosen: null, reason: `OpenBLAS recognises this CPU (${detected})` };
}

// The probe loads the addon in a child process with OPENBLAS_CORETYPE unset and asks OpenBLAS which core
// it chose. Its answer is cached beside the addon, keyed by CPU and addon build, so it runs once per machine.
function probeDetectedCore(addonFile: string, cpuKey: string): string | null {
  const cacheFile = path.join(path.dirname(addonFile), 'openblas-core.json');
  const addonMtime = fs.statSync(addonFile).mtimeMs;
  try {
    const cached = JSON.parse(fs.readFileSync(cacheFile, 'utf8')) as ProbeCache;
    if (cached.cpu === cpuKey && cached.addon === addonFile && cached.addonMtime === addonMtime) return cached.core;
  } catch {
    // no cache yet, or a stale or unreadable one: probe
  }
  const env = { ...process.env };
  delete env.OPENBLAS_CORETYPE;
  const script =
    `const a = require(${JSON.stringify(addonFile)});` +
    `process.stdout.write(JSON.stringify(typeof a.blasInfo === 'function' ? a.blasInfo().openblasCore : null))`;
  const probe = spawnSync(process.execPath, ['-e', script], { env, encoding: 'utf8', timeout: 60_000 });
  // A probe killed by a signal (some old OpenBLAS builds crash on CPUs they misdetect) counts as a fallback;
  // one that could not load the addon says nothing (the real load will report why).
  let core: string | null = null;
  if (probe.signal) core = 'Prescott';
  else if (probe.status === 0) core = JSON.parse(probe.stdout) as string | null;
  const tmp = `${cacheFile}.${process.pid}.tmp`;
  try {
    fs.writeFileSync(tmp, JSON.stringify({ cpu: cpuKey, addon: addonFile, addonMtime, core } satisfies ProbeCache));
    fs.renameSync(tmp, cacheFile);
  } catch {
    // a read-only install: probe again next time
    fs.rmSync(tmp, { force: true });
  }
  return core;
}

let lastChoice: CoreChoice = { detected: null, chosen: null, reason: 'not checked' };

/**
 * Sets OPENBLAS_CORETYPE for this process (and its children) before the addon loads, when the addon's
 * libtorch uses OpenBLAS and OpenBLAS would fall back to slower kernels than this CPU supports.
 * Only for libtorch builds that link OpenBLAS (the build stamp beside the addon says which libtorch).
 */
export function chooseOpenblasCoreType(addonFile: string): CoreChoice {
  if (process.env.OPENBLAS_CORETYPE) {
    lastChoice = {
      detected: null,
      chosen: null,
      reason: `OPENBLAS_CORETYPE=${process.env.OPENBLAS_CORETYPE} (set by the user)`,
    };
    return lastChoice;
  }
  if (process.env.MIXLORA_OPENBLAS_PROBE === '0' || process.platform !== 'linux' || process.arch !== 'x64') {
    lastChoice = { detected: null, chosen: null, reason: 'not checked' };
    return lastChoice;
  }
  const cpu = readCpuInfo();
  const cpuKey = `${cpu.model}|${[...cpu.flags].sort().join(' ')}`;
  lastChoice = decideCoreType(probeDetectedCore(addonFile, cpuKey), cpu.flags);
  if (lastChoice.chosen) process.env.OPENBLAS_CORETYPE = lastChoice.chosen;
  return lastChoice;
}

/** What chooseOpenblasCoreType decided in this process. */
export function openblasCoreChoice(): CoreChoice {
  return lastChoice;
}
