// Prometheus metrics of one server (a registry of its own, so several servers can share a process).
import { Counter, Gauge, Histogram, Registry } from 'prom-client';

// Latency buckets in seconds: sub-millisecond steps on small models up to tens of seconds queued.
const BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

export class ServerMetrics {
  readonly registry = new Registry();
  readonly requests = new Counter({
    name: 'mixlora_requests_total',
    help: 'Completion and chat requests by model (adapter) and HTTP status',
    labelNames: ['model', 'status'] as const,
    registers: [this.registry],
  });
  readonly generatedTokens = new Counter({
    name: 'mixlora_generated_tokens_total',
    help: 'Tokens generated, by model (adapter)',
    labelNames: ['model'] as const,
    registers: [this.registry],
  });
  readonly promptTokens = new Counter({
    name: 'mixlora_prompt_tokens_total',
    help: 'Prompt tokens prefilled, by model (adapter)',
    labelNames: ['model'] as const,
    registers: [this.registry],
  });
  readonly queueDepth = new Gauge({
    name: 'mixlora_queue_depth',
    help: 'Sequences waiting for a batch slot',
    registers: [this.registry],
  });
  readonly runningBatch = new Gauge({
    name: 'mixlora_running_batch_size',
    help: 'Sequences in the running batch',
    registers: [this.registry],
  });
  readonly kvBlocks = new Gauge({
    name: 'mixlora_kv_blocks',
    help: 'KV cache blocks by state: used (held by sequences), cached (kept for prefix hits), free',
    labelNames: ['state'] as const,
    registers: [this.registry],
  });
  readonly prefixQueryTokens = new Counter({
    name: 'mixlora_prefix_cache_query_tokens_total',
    help: 'Prompt tokens looked up in the prefix cache',
    registers: [this.registry],
  });
  readonly prefixHitTokens = new Counter({
    name: 'mixlora_prefix_cache_hit_tokens_total',
    help: 'Prompt tokens found in the prefix cache (not computed again)',
    registers: [this.registry],
  });
  readonly preemptions = new Counter({
    name: 'mixlora_preemptions_total',
    help: 'Sequences taken out of the batch when the KV cache was full (computed again later)',
    registers: [this.registry],
  });
  readonly adaptersLoaded = new Gauge({
    name: 'mixlora_adapters_loaded',
    help: 'Adapters in memory (pinned ones included)',
    registers: [this.registry],
  });
  readonly adapterLoads = new Counter({
    name: 'mixlora_adapter_loads_total',
    help: 'Adapter loads by reason: cli, api (POST /v1/adapters, /v1/load_lora_adapter), on_demand, reload (after an eviction)',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });
  readonly adapterEvictions = new Counter({
    name: 'mixlora_adapter_evictions_total',
    help: 'Adapters taken out of memory by reason: lru (--max-loaded-adapters), unload (an API call)',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });
  readonly adapterLoadSeconds = new Histogram({
    name: 'mixlora_adapter_load_seconds',
    help: 'Time to load an adapter (reading its files and building its tensors)',
    buckets: BUCKETS,
    registers: [this.registry],
  });
  readonly timeToFirstToken = new Histogram({
    name: 'mixlora_time_to_first_token_seconds',
    help: 'From arrival to the first generated token, by model (adapter)',
    labelNames: ['model'] as const,
    buckets: BUCKETS,
    registers: [this.registry],
  });
  readonly timePerToken = new Histogram({
    name: 'mixlora_time_per_output_token_seconds',
    help: 'Between consecutive generated tokens of a sequence, by model (adapter)',
    labelNames: ['model'] as const,
    buckets: BUCKETS,
    registers: [this.registry],
  });
}
