"""Reference values computed by the real libraries rather than by our own re-implementation:

- Hugging Face transformers (AutoModelForCausalLM, float32, eager attention) runs every tiny model folder
  that models.py and families.py (Gemma, Gemma 2, Phi-3) write: logits, transformers' causal-LM loss and the per-token NLL for fixed ids, plus a
  right-padded batch with an attention mask, and greedy generate() on left-padded prompts (with and
  without a repetition penalty). Each model is also saved again with transformers' save_pretrained, so
  that the folder layout and config.json keys of the installed transformers are loaded too.
- Hugging Face PEFT (LoraConfig + get_peft_model) puts LoRA and DoRA adapters on some of those models,
  with B and the DoRA magnitudes perturbed (fixed seed) so that the adapter is not the identity, and saves
  them with its own save_pretrained (adapter_config.json + adapter_model.safetensors exactly as PEFT
  writes them). Expected: the PEFT model's logits, loss and the gradient of every saved adapter tensor,
  and the projections PEFT's merge_and_unload produces. On Phi-3 PEFT adapts the fused qkv_proj and
  gate_up_proj, as the reference tools do.
- MixLoRA on the families.py models: families.mixlora_adapters (transformers' model with the reference
  MixLoRA block in place of its MLPs).

Needs torch, transformers and peft (the project's virtual environment). Written to
OUT/transformers/<model>.safetensors, OUT/transformers/saved/<model>/ and
OUT/peft/<case>/{adapter/, expected.safetensors}."""
import os

import torch
import torch.nn.functional as F
import transformers
from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
from transformers import AutoModelForCausalLM

import families
import models
from common import save_safetensors, write_json

ALL_MODELS = {**models.CASES, **families.CASES}  # the LLaMA family's folders, then Gemma, Gemma 2, Phi-3

ALL_TARGETS = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj']
PADDED_LENGTHS = [12, 7, 9]  # a right-padded batch: row i holds PADDED_LENGTHS[i] tokens
GEN_PROMPT_LENGTHS = [6, 3]  # greedy generation: prompts of these lengths, left-padded in a batch
GEN_TOKENS = 8
GEN_PENALTY = 1.3  # repetition_penalty


def load_hf(d):
    """A model folder through transformers, refusing any weight it had to invent or could not place."""
    model, info = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation='eager',
                                                       output_loading_info=True)
    problems = {k: v for k, v in info.items() if v}
    if problems:
        raise RuntimeError(f'{d}: transformers did not load the folder cleanly: {problems}')
    return model.eval()


def per_token_nll(logits, ids, lengths=None):
    """NLL of token t+1 given positions ≤ t: [B, T-1]; positions at or past a row's length are 0."""
    B, T, V = logits.shape
    nll = F.cross_entropy(logits[:, :-1].reshape(-1, V), ids[:, 1:].reshape(-1), reduction='none').reshape(B, T - 1)
    if lengths is not None:
        nll = nll * (torch.arange(1, T).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1))
    return nll


def checked_generate(model, ids, **kw):
    """transformers' greedy generate; refuses a fixture where a near-tie (top-2 margin of the processed
    scores < 1e-3) would make the expected tokens depend on rounding."""
    res = model.generate(input_ids=ids, max_new_tokens=GEN_TOKENS, do_sample=False, pad_token_id=0, output_scores=True,
                         return_dict_in_generate=True, **kw)
    top = torch.stack(res.scores).topk(2, -1).values  # [steps, B, 2]
    margin = float((top[..., 0] - top[..., 1]).min())
    if margin < 1e-3:
        raise RuntimeError(f'greedy generation has a near-tie (margin {margin:.2e}): choose other prompts')
    return res.sequences[:, ids.shape[1]:]


def greedy_generation(model, cfg, g):
    """Two prompts of different lengths: transformers' greedy generate on the left-padded batch (equal to
    each prompt alone, which is checked), and on each prompt alone with repetition_penalty (transformers
    penalises every id in input_ids, left padding included, so the penalty is taken from unpadded runs)."""
    model.generation_config.eos_token_id = None  # mixlora's test generates every token too (no stop ids)
    prompts = [torch.randint(1, cfg['vocab_size'], (n,), generator=g).tolist() for n in GEN_PROMPT_LENGTHS]
    L = max(GEN_PROMPT_LENGTHS)
    ids = torch.tensor([[0] * (L - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (L - len(p)) + [1] * len(p) for p in prompts])
    batched = checked_generate(model, ids, attention_mask=mask)
    alone = torch.cat([checked_generate(model, torch.tensor([p])) for p in prompts])
    if not torch.equal(batched, alone):
        raise RuntimeError('transformers: the left-padded batch does not generate what the prompts do alone')
    penalty = torch.cat([checked_generate(model, torch.tensor([p]), repetition_penalty=GEN_PENALTY) for p in prompts])
    return {'gen_prompts': ids, 'gen_prompt_mask': mask, 'gen_greedy': batched, 'gen_greedy_penalty': penalty}


def transformers_models(out):
    """Every model folder of models.py and families.py through transformers' own forward pass."""
    names = []
    for i, (name, cfg) in enumerate(ALL_MODELS.items()):
        model = load_hf(os.path.join(out, 'models', name))
        g = torch.Generator().manual_seed(900 + i)
        ids = torch.randint(0, cfg['vocab_size'], (2, 12), generator=g)
        labels = ids.clone()
        labels[1, :4] = -100
        T = max(PADDED_LENGTHS)
        padded = torch.randint(0, cfg['vocab_size'], (len(PADDED_LENGTHS), T), generator=g)
        mask = (torch.arange(T).unsqueeze(0) < torch.tensor(PADDED_LENGTHS).unsqueeze(1)).long()
        padded = padded * mask  # pad id 0
        with torch.no_grad():
            res = model(input_ids=ids, labels=labels)
            padded_logits = model(input_ids=padded, attention_mask=mask).logits
        expected = {
            'input_ids': ids,
            'labels': labels,
            'logits': res.logits,
            'loss': res.loss.reshape(1),  # transformers' causal-LM loss: mean over labels != -100, shifted
            'nll': per_token_nll(res.logits, ids),
            'padded_input_ids': padded,
            'padded_attention_mask': mask,
            'padded_logits': padded_logits,
            'padded_nll': per_token_nll(padded_logits, padded, PADDED_LENGTHS),
        }
        expected.update(greedy_generation(model, cfg, torch.Generator().manual_seed(960 + i)))
        # The same model as transformers itself saves it (config.json in its current layout, e.g. rope_parameters).
        model.save_pretrained(os.path.join(out, 'transformers', 'saved', name))
        save_safetensors(os.path.join(out, 'transformers', f'{name}.safetensors'), expected)
        names.append(name)
    write_json(os.path.join(out, 'transformers', 'index.json'), names)


# case -> (model folder written by models.py, LoraConfig arguments)
PEFT_CASES = {
    'lora-llama-bias': ('llama-mha-bias', dict(r=4, lora_alpha=8, target_modules=ALL_TARGETS)),
    'lora-rslora-gqa-tied': ('llama-gqa-llama3-tied', dict(r=8, lora_alpha=16, use_rslora=True, target_modules=ALL_TARGETS)),
    'dora-qwen2-bias': ('qwen2-bias-tied', dict(r=4, lora_alpha=8, use_dora=True, target_modules=ALL_TARGETS)),
    'dora-rslora-mistral-some': ('mistral-gqa-window', dict(r=2, lora_alpha=6, use_dora=True, use_rslora=True,
                                                            target_modules=['q_proj', 'v_proj', 'up_proj', 'down_proj'])),
    'lora-gemma2': ('gemma2-window-softcap', dict(r=4, lora_alpha=8, target_modules=ALL_TARGETS)),
    'dora-gemma-some': ('gemma-mqa-headdim', dict(r=2, lora_alpha=4, use_dora=True, target_modules=['k_proj', 'o_proj', 'up_proj'])),
    # Phi-3's module names (PEFT's and the reference tools'): the fused projections are adapted whole.
    'dora-phi3-fused': ('phi3-partial-rotary', dict(r=4, lora_alpha=8, use_dora=True,
                                                     target_modules=['qkv_proj', 'o_proj', 'gate_up_proj', 'down_proj'])),
    'lora-rslora-phi3-some': ('phi3-partial-rotary', dict(r=2, lora_alpha=4, use_rslora=True, target_modules=['qkv_proj', 'gate_up_proj'])),
}


def peft_adapters(out):
    names = []
    for i, (name, (model_name, lora_args)) in enumerate(PEFT_CASES.items()):
        mcfg = ALL_MODELS[model_name]
        d = os.path.join(out, 'peft', name)
        torch.manual_seed(1000 + i)  # PEFT draws A (Kaiming-uniform) from the global generator
        peft_model = get_peft_model(load_hf(os.path.join(out, 'models', model_name)),
                                    LoraConfig(task_type='CAUSAL_LM', lora_dropout=0.0, **lora_args))
        g = torch.Generator().manual_seed(1100 + i)
        with torch.no_grad():
            for n, p in peft_model.named_parameters():
                if 'lora_B' in n:  # PEFT starts B at 0 (the identity); make the adapter do something
                    p.copy_(torch.randn(p.shape, generator=g) * 0.3)
                elif 'lora_magnitude_vector' in n:  # and move the magnitudes off ‖W‖
                    p.mul_(1 + 0.2 * torch.randn(p.shape, generator=g))
        peft_model.save_pretrained(os.path.join(d, 'adapter'))

        ids = torch.randint(0, mcfg['vocab_size'], (2, 9), generator=g)
        labels = ids.clone()
        labels[0, :3] = -100
        res = peft_model(input_ids=ids, labels=labels)
        res.loss.backward()
        # Gradients under the names PEFT saves the tensors with (its own state-dict mapping).
        grads = get_peft_model_state_dict(peft_model, state_dict={
            n: p.grad for n, p in peft_model.named_parameters() if p.requires_grad})
        expected = {'input_ids': ids, 'labels': labels, 'logits': res.logits.detach(), 'loss': res.loss.detach().reshape(1)}
        for k, t in grads.items():
            expected['grad.' + k] = t
        with torch.no_grad():
            merged = peft_model.merge_and_unload().state_dict()
        for k, t in merged.items():
            if any(f'.{p}.weight' in k for p in lora_args['target_modules']):
                expected['merged.' + k] = t
        save_safetensors(os.path.join(d, 'expected.safetensors'), expected)
        names.append(dict(name=name, model=model_name))
    write_json(os.path.join(out, 'peft', 'index.json'), names)


def generate(out):
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    os.makedirs(os.path.join(out, 'transformers'), exist_ok=True)
    transformers_models(out)
    peft_adapters(out)
    families.mixlora_adapters(out, load_hf)
