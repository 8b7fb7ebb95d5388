// The part of bun:ffi that lib/ffi/bun.ts uses (Bun's own typings would replace @types/node's globals).
declare module "bun:ffi" {
  type Pointer = number & { readonly __pointer: unique symbol };
  type ArgType = "i32" | "u32" | "i64" | "u64" | "usize" | "ptr";
  type ReturnType = "i32" | "i64_fast" | "ptr";
  type Arg<T> = T extends "ptr" ? NodeJS.TypedArray | Pointer | null : number;
  type Ret<T> = T extends "ptr" ? Pointer | null : number;
  interface Fn {
    readonly args: readonly ArgType[];
    readonly returns: ReturnType;
  }
  type Args<A> = { [K in keyof A]: Arg<A[K]> };
  export function dlopen<const S extends Record<string, Fn>>(
    path: string,
    symbols: S,
  ): {
    symbols: { [K in keyof S]: (...args: Args<S[K]["args"]> & unknown[]) => Ret<S[K]["returns"]> };
    close(): void;
  };
  export const read: { i32(ptr: Pointer, offset?: number): number };
  export class CString extends String {
    constructor(ptr: Pointer, byteOffset?: number, byteLength?: number);
  }
}
