// A restricted unpickler for PyTorch checkpoints (adapter_model.bin): it understands the opcodes of
// pickle protocols 2-5 but calls nothing. The only globals it accepts are the few a tensor dictionary
// needs (OrderedDict, torch's tensor rebuild functions, storage types); anything else (os.system,
// builtins.eval, ...) is refused before any further byte is read. The result holds TensorRef values
// whose bytes the caller reads from the archive.
import { UserError } from '../util/errors.js';
import type { DType } from '../tensor/dtype.js';

export interface StorageRef {
  kind: 'storage';
  key: string;
  dtype: DType;
  numel: number;
}
export interface TensorRef {
  kind: 'tensor';
  storage: StorageRef;
  offset: number;
  shape: number[];
  stride: number[];
}

const STORAGE_TYPES: Record<string, DType> = {
  FloatStorage: 'float32',
  DoubleStorage: 'float64',
  HalfStorage: 'float16',
  BFloat16Storage: 'bfloat16',
  LongStorage: 'int64',
  IntStorage: 'int32',
  ShortStorage: 'int16',
  CharStorage: 'int8',
  ByteStorage: 'uint8',
  BoolStorage: 'bool',
};

type Callable = (args: unknown[]) => unknown;
interface Global {
  module: string;
  name: string;
  call?: Callable;
  storage?: DType;
}

const MARK = Symbol('mark');
class OrderedDictValue extends Map<unknown, unknown> {}

function allowedGlobal(module: string, name: string, where: string): Global {
  const full = `${module}.${name}`;
  if (module === 'collections' && name === 'OrderedDict') return { module, name, call: () => new OrderedDictValue() };
  if (module === 'torch._utils' && (name === '_rebuild_tensor_v2' || name === '_rebuild_tensor')) {
    return {
      module,
      name,
      call: (a) => {
        const [storage, offset, shape, stride] = a as [StorageRef, number, number[], number[]];
        if (!storage || storage.kind !== 'storage') throw new UserError(`${where}: malformed tensor record`);
        return { kind: 'tensor', storage, offset, shape: [...shape], stride: [...stride] } satisfies TensorRef;
      },
    };
  }
  if (module === 'torch._utils' && name === '_rebuild_parameter') return { module, name, call: (a) => a[0] };
  if (module === 'torch' && name in STORAGE_TYPES) return { module, name, storage: STORAGE_TYPES[name] };
  throw new UserError(
    `${where}: refusing to load: the pickle references ${full} (only tensor dictionaries are accepted; nothing was executed)`,
  );
}

const MAX_ITEMS = 10_000_000;

/** Unpickles `data`; `persistentLoad` resolves persistent ids (PyTorch's storages). */
export function unpickle(data: Uint8Array, where: string): unknown {
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const stack: unknown[] = [];
  const memo = new Map<number, unknown>();
  let pos = 0;
  let items = 0;
  const fail = (msg: string): never => {
    throw new UserError(`${where}: malformed pickle: ${msg}`);
  };
  const need = (n: number) => {
    if (pos + n > data.length) fail('truncated');
  };
  const u8 = () => {
    need(1);
    return data[pos++]!;
  };
  const u16 = () => {
    need(2);
    const v = view.getUint16(pos, true);
    pos += 2;
    return v;
  };
  const u32 = () => {
    need(4);
    const v = view.getUint32(pos, true);
    pos += 4;
    return v;
  };
  const i32 = () => {
    need(4);
    const v = view.getInt32(pos, true);
    pos += 4;
    return v;
  };
  const bytes = (n: number) => {
    need(n);
    const b = data.subarray(pos, pos + n);
    pos += n;
    return b;
  };
  const text = (n: number) => new TextDecoder('utf-8', { fatal: false }).decode(bytes(n));
  const line = () => {
    const end = data.indexOf(0x0a, pos);
    if (end < 0) fail('unterminated line');
    const s = new TextDecoder().decode(data.subarray(pos, end));
    pos = end + 1;
    return s;
  };
  const pop = () => {
    if (stack.length === 0) fail('stack underflow');
    return stack.pop();
  };
  const popMark = (): unknown[] => {
    const i = stack.lastIndexOf(MARK);
    if (i < 0) fail('missing MARK');
    const items = stack.splice(i);
    items.shift();
    return items;
  };
  const push = (v: unknown) => {
    if (++items > MAX_ITEMS) fail('too many objects');
    stack.push(v);
  };
  const setItem = (d: unknown, k: unknown, v: unknown) => {
    if (!(d instanceof Map)) fail('SETITEM on a non-dict');
    (d as Map<unknown, unknown>).set(k, v);
  };
  for (;;) {
    const op = u8();
    switch (op) {
      case 0x80:
        u8();
        break; // PROTO
      case 0x95:
        pos += 8;
        break; // FRAME
      case 0x2e:
        return pop(); // STOP
      case 0x7d:
        push(new Map());
        break; // EMPTY_DICT
      case 0x5d:
        push([]);
        break; // EMPTY_LIST
      case 0x29:
        push([]);
        break; // EMPTY_TUPLE
      case 0x28:
        push(MARK);
        break; // MARK
      case 0x4e:
        push(null);
        break; // NONE
      case 0x88:
        push(true);
        break; // NEWTRUE
      case 0x89:
        push(false);
        break; // NEWFALSE
      case 0x4b:
        push(u8());
        break; // BININT1
      case 0x4d:
        push(u16());
        break; // BININT2
      case 0x4a:
        push(i32());
        break; // BININT
      case 0x8a: {
        // LONG1
        const n = u8();
        const b = bytes(n);
        let v = 0n;
        for (let i = n - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]!);
        if (n > 0 && b[n - 1]! & 0x80) v -= 1n << BigInt(8 * n);
        push(Number(v));
        break;
      }
      case 0x47: {
        need(8);
        push(view.getFloat64(pos, false));
        pos += 8;
        break;
      } // BINFLOAT
      case 0x58:
        push(text(u32()));
        break; // BINUNICODE
      case 0x8c:
        push(text(u8()));
        break; // SHORT_BINUNICODE
      case 0x8d: {
        need(8);
        const n = Number(view.getBigUint64(pos, true));
        pos += 8;
        push(text(n));
        break;
      } // BINUNICODE8
      case 0x54:
        push(text(u32()));
        break; // BINSTRING
      case 0x55:
        push(text(u8()));
        break; // SHORT_BINSTRING
      case 0x42:
        push(bytes(u32()));
        break; // BINBYTES
      case 0x43:
        push(bytes(u8()));
        break; // SHORT_BINBYTES
      case 0x71:
        memo.set(u8(), stack[stack.length - 1]);
        break; // BINPUT
      case 0x72:
        memo.set(u32(), stack[stack.length - 1]);
        break; // LONG_BINPUT
      case 0x94:
        memo.set(memo.size, stack[stack.length - 1]);
        break; // MEMOIZE
      case 0x68: {
        const k = u8();
        if (!memo.has(k)) fail(`memo ${k} unset`);
        push(memo.get(k));
        break;
      } // BINGET
      case 0x6a: {
        const k = u32();
        if (!memo.has(k)) fail(`memo ${k} unset`);
        push(memo.get(k));
        break;
      } // LONG_BINGET
      case 0x63: {
        const module = line();
        const name = line();
        push(allowedGlobal(module, name, where));
        break;
      } // GLOBAL
      case 0x93: {
        const name = pop();
        const module = pop();
        push(allowedGlobal(String(module), String(name), where));
        break;
      } // STACK_GLOBAL
      case 0x85:
        push([pop()]);
        break; // TUPLE1
      case 0x86: {
        const b = pop();
        const a = pop();
        push([a, b]);
        break;
      } // TUPLE2
      case 0x87: {
        const c = pop();
        const b = pop();
        const a = pop();
        push([a, b, c]);
        break;
      } // TUPLE3
      case 0x74:
        push(popMark());
        break; // TUPLE
      case 0x6c:
        push(popMark());
        break; // LIST
      case 0x64: {
        // DICT
        const kv = popMark();
        const d = new Map();
        for (let i = 0; i + 1 < kv.length; i += 2) d.set(kv[i], kv[i + 1]);
        push(d);
        break;
      }
      case 0x61: {
        const v = pop();
        const l = stack[stack.length - 1];
        if (!Array.isArray(l)) fail('APPEND on a non-list');
        (l as unknown[]).push(v);
        break;
      } // APPEND
      case 0x65: {
        const vs = popMark();
        const l = stack[stack.length - 1];
        if (!Array.isArray(l)) fail('APPENDS on a non-list');
        (l as unknown[]).push(...vs);
        break;
      }
      case 0x73: {
        const v = pop();
        const k = pop();
        setItem(stack[stack.length - 1], k, v);
        break;
      } // SETITEM
      case 0x75: {
        const kv = popMark();
        const d = stack[stack.length - 1];
        for (let i = 0; i + 1 < kv.length; i += 2) setItem(d, kv[i], kv[i + 1]);
        break;
      } // SETITEMS
      case 0x30:
        pop();
        break; // POP
      case 0x31:
        popMark();
        break; // POP_MARK
      case 0x32:
        push(stack[stack.length - 1]);
        break; // DUP
      case 0x51: {
        // BINPERSID
        const pid = pop();
        if (!Array.isArray(pid) || pid[0] !== 'storage' || pid.length < 5) fail('unsupported persistent id');
        const [, type, key, , numel] = pid as [string, Global, unknown, unknown, unknown];
        if (!type || !type.storage) fail('persistent id without a storage type');
        if (!Number.isSafeInteger(numel) || (numel as number) < 0) fail('bad storage size');
        push({ kind: 'storage', key: String(key), dtype: type.storage!, numel: numel as number } satisfies StorageRef);
        break;
      }
      case 0x52: {
        // REDUCE
        const args = pop();
        const fn = pop() as Global;
        if (!fn || typeof fn.call !== 'function' || !Array.isArray(args))
          fail('REDUCE on something that is not an allowed function');
        push(fn.call!(args as unknown[]));
        break;
      }
      case 0x81: {
        // NEWOBJ
        const args = pop();
        const cls = pop() as Global;
        if (!cls || typeof cls.call !== 'function') fail('NEWOBJ on something that is not an allowed class');
        push(cls.call!(args as unknown[]));
        break;
      }
      case 0x62: {
        // BUILD: only state updates of dicts (OrderedDict) are accepted
        const state = pop();
        const obj = stack[stack.length - 1];
        if (obj instanceof Map && (state === null || state instanceof Map)) {
          if (state) for (const [k, v] of state) obj.set(k, v);
          break;
        }
        // Tensors built by _rebuild_tensor_v2 may receive an empty state: nothing to do.
        if (obj && typeof obj === 'object' && (obj as TensorRef).kind === 'tensor') break;
        fail('BUILD on an object that is not a dict');
        break;
      }
      default:
        fail(`unsupported opcode 0x${op.toString(16)} at byte ${pos - 1}`);
    }
  }
}
