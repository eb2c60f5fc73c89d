// --adapter DIR for commands that run a model.
import type { Command } from 'commander';
import type { LoadedModel } from '../models/load.js';
import type { ForwardHooks } from '../models/hooks.js';
import type { Adapter } from '../adapters/adapter.js';

export function addAdapterOption(cmd: Command): Command {
  return cmd.option(
    '--adapter <dir>',
    'adapter folder (LoRA, DoRA, MixLoRA or MixDoRA; adapter_config.json + adapter_model.safetensors or .bin)',
  );
}

/** The --adapter folder's adapter, loaded for inference, or undefined without --adapter. */
export async function inferenceAdapter(loaded: LoadedModel, dir: string | undefined): Promise<Adapter | undefined> {
  if (!dir) return undefined;
  const { loadAdapter } = await import('../adapters/io.js');
  // Generation and perplexity never change the adapter: its DoRA scales are computed once.
  return (await loadAdapter(dir, loaded.model)).freezeForInference(loaded.model);
}

/** Hooks that apply the adapter to every row, or undefined without --adapter. */
export async function adapterHooks(loaded: LoadedModel, dir: string | undefined): Promise<ForwardHooks | undefined> {
  const adapter = await inferenceAdapter(loaded, dir);
  if (!adapter) return undefined;
  const { AdapterBatch } = await import('../adapters/batch.js');
  return AdapterBatch.all(adapter, { training: false });
}
