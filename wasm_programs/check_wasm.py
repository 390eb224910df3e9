#!/usr/bin/env python3
"""Checks built ONVM programs against docs/ABI.md (version 1).

For each .wasm file: every import must be one of the ABI functions, from module `env`, with the
ABI's signature; `memory` must be exported; `onvm_main` must be exported with one of the three
entrypoint shapes; `onvm_alloc` is optional (the host then places the input in fresh pages), but
if exported it must be `(i32) -> i32`. Prints a summary per file; exits 1 on any violation.

Usage: check_wasm.py [--require-alloc] [--no-alloc NAME.wasm]... FILE.wasm...
  --require-alloc       a missing onvm_alloc is an error (build.sh checks the samples this way)
  --no-alloc NAME.wasm  NAME.wasm must not export onvm_alloc (echo.wasm always)
"""

import os
import sys

I32, I64, F32, F64 = 0x7F, 0x7E, 0x7D, 0x7C
NAMES = {I32: "i32", I64: "i64", F32: "f32", F64: "f64", 0x7B: "v128", 0x70: "funcref", 0x6F: "externref"}

ABI_IMPORTS = {
    "onvm_state_get": ((I32, I32, I32, I32), (I64,)),
    "onvm_state_put": ((I32, I32, I32, I32), (I32,)),
    "onvm_state_del": ((I32, I32), (I32,)),
    "onvm_state_next": ((I32, I32, I32, I32, I32, I32), (I64,)),
    "onvm_state_root": ((I32,), (I32,)),
    "onvm_blob_len": ((I32,), (I64,)),
    "onvm_blob_read": ((I32, I64, I32, I32), (I64,)),
    "onvm_log": ((I32, I32), ()),
    "onvm_caller": ((I32,), (I32,)),
    "onvm_context": ((I32,), (I32,)),
    "onvm_abort": ((I32, I32), ()),
}

ENTRY_SHAPES = {
    ((I32, I32), (I32, I32)): "multi-value",
    ((I32, I32), (I64,)): "packed",
    ((I32, I32, I32), ()): "sret",
}

ALLOC_SIG = ((I32,), (I32,))

# Programs that deliberately do not export onvm_alloc (host "fresh pages" input path).
NO_ALLOC = {"echo.wasm"}
# Set by --require-alloc.
REQUIRE_ALLOC = [False]


class Reader:
    def __init__(self, data, pos=0, end=None):
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end

    def byte(self):
        if self.pos >= self.end:
            raise ValueError("unexpected end of section")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def uleb(self):
        result = shift = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return result

    def bytes(self, n):
        if self.pos + n > self.end:
            raise ValueError("unexpected end of section")
        b = self.data[self.pos : self.pos + n]
        self.pos += n
        return b

    def name(self):
        return self.bytes(self.uleb()).decode("utf-8")

    def limits(self):
        flags = self.byte()
        self.uleb()
        if flags & 1:
            self.uleb()
        return flags


def sig(types):
    params, results = types
    p = ", ".join(NAMES.get(t, hex(t)) for t in params)
    r = ", ".join(NAMES.get(t, hex(t)) for t in results)
    return f"({p}) -> ({r})"


def parse(data):
    if data[:4] != b"\0asm" or data[4:8] != b"\x01\0\0\0":
        raise ValueError("not a core wasm module (version 1)")
    types, imports, funcs, exports = [], [], [], []
    r = Reader(data, 8)
    while r.pos < len(data):
        sid = r.byte()
        size = r.uleb()
        s = Reader(data, r.pos, r.pos + size)
        r.pos += size
        if sid == 1:  # type
            for _ in range(s.uleb()):
                if s.byte() != 0x60:
                    raise ValueError("unsupported type form")
                params = tuple(s.byte() for _ in range(s.uleb()))
                results = tuple(s.byte() for _ in range(s.uleb()))
                types.append((params, results))
        elif sid == 2:  # import
            for _ in range(s.uleb()):
                module, field, kind = s.name(), s.name(), s.byte()
                if kind == 0:
                    imports.append((module, field, "func", types[s.uleb()]))
                elif kind == 1:
                    s.byte()
                    s.limits()
                    imports.append((module, field, "table", None))
                elif kind == 2:
                    s.limits()
                    imports.append((module, field, "memory", None))
                elif kind == 3:
                    s.byte()
                    s.byte()
                    imports.append((module, field, "global", None))
                else:
                    imports.append((module, field, f"kind {kind}", None))
                    break
        elif sid == 3:  # function
            funcs = [s.uleb() for _ in range(s.uleb())]
        elif sid == 7:  # export
            for _ in range(s.uleb()):
                exports.append((s.name(), s.byte(), s.uleb()))
    imported_funcs = [i[3] for i in imports if i[2] == "func"]
    func_types = imported_funcs + [types[t] for t in funcs]
    return imports, exports, func_types


def check(path):
    errors = []
    warnings = []
    with open(path, "rb") as f:
        data = f.read()
    imports, exports, func_types = parse(data)
    name = os.path.basename(path)

    for module, field, kind, ty in imports:
        if module != "env":
            errors.append(f"import {module}.{field}: module is not `env`")
        elif kind != "func":
            errors.append(f"import env.{field}: a {kind}, not a function")
        elif field not in ABI_IMPORTS:
            errors.append(f"import env.{field}: not an ABI function")
        elif ty != ABI_IMPORTS[field]:
            errors.append(f"import env.{field}: {sig(ty)}, ABI says {sig(ABI_IMPORTS[field])}")

    kinds = {0: "func", 1: "table", 2: "memory", 3: "global"}
    ex = {n: (kinds.get(k, str(k)), i) for n, k, i in exports}
    if ex.get("memory", ("",))[0] != "memory":
        errors.append("no exported memory named `memory`")
    shape = None
    if ex.get("onvm_main", ("",))[0] != "func":
        errors.append("no exported function `onvm_main`")
    else:
        ty = func_types[ex["onvm_main"][1]]
        shape = ENTRY_SHAPES.get(ty)
        if shape is None:
            errors.append(f"onvm_main has type {sig(ty)}, not an entrypoint shape")
    has_alloc = "onvm_alloc" in ex
    if has_alloc:
        ty = func_types[ex["onvm_alloc"][1]] if ex["onvm_alloc"][0] == "func" else None
        if ty != ALLOC_SIG:
            errors.append(f"onvm_alloc has type {ty and sig(ty)}, not (i32) -> (i32)")
        if name in NO_ALLOC:
            errors.append("onvm_alloc is exported but this program must not have it")
    elif name not in NO_ALLOC:
        if REQUIRE_ALLOC[0]:
            errors.append("onvm_alloc is not exported")
        else:
            warnings.append(
                "onvm_alloc is not exported (optional: the host places the input in fresh pages)"
            )

    print(f"{path}: {len(data)} bytes")
    print(f"  imports: {', '.join(f'{m}.{f}' for m, f, _, _ in imports) or '(none)'}")
    print(f"  exports: {', '.join(f'{n} ({kinds.get(k, k)})' for n, k, _ in exports)}")
    print(f"  entrypoint shape: {shape}; onvm_alloc: {'yes' if has_alloc else 'no'}")
    for w in warnings:
        print(f"  note: {w}")
    for e in errors:
        print(f"  ERROR: {e}")
    return not errors


def main():
    if len(sys.argv) < 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    args = sys.argv[1:]
    paths = []
    while args:
        a = args.pop(0)
        if a == "--require-alloc":
            REQUIRE_ALLOC[0] = True
        elif a == "--no-alloc" and args:
            NO_ALLOC.add(args.pop(0))
        else:
            paths.append(a)
    ok = True
    for path in paths:
        try:
            ok &= check(path)
        except (OSError, ValueError, IndexError, UnicodeDecodeError) as e:
            print(f"{path}: ERROR: {e}")
            ok = False
    print("all modules conform to ABI v1" if ok else "ABI violations found")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
