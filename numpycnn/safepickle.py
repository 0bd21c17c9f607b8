"""Unpickling untrusted model files: no code from the file runs, and memory stays bounded.

``loads(data)`` runs the standard (C) unpickler with an allowlist of the globals that NumPy
arrays, dtypes and scalars need, each wrapped in a check of its arguments. Before that, a
pre-scan of the opcode stream (``pickletools.genops``) follows the unpickler's stack with
placeholders, so that everything that could allocate more than the file holds is refused
before anything is built:

- every length (strings, bytes, frames) must fit in the rest of the file;
- a memo index (PUT, LONG_BINPUT) may not exceed the number of opcodes read so far (the C
  unpickler sizes its memo table by the largest index);
- every array (``_reconstruct``, ``ndarray.__setstate__``, ``_frombuffer``) and scalar
  must be backed by exactly as many bytes of the file as its shape and dtype need;
- dtypes are plain numbers or strings, and their ``__setstate__`` state must be NumPy's
  own for that type (a crafted state can mark a dtype as holding objects, and crash);
- ``bytearray`` and ``codecs.encode`` only rebuild bytes from the file's own strings;
- at most ``max_containers(size)`` containers are made (an empty set takes 216 bytes of
  memory and one byte of file).

After loading, the containers are walked once: nesting deeper than ``MAX_DEPTH``, a
container that holds itself, or shared references that would expand to far more items
than the file has opcodes are refused, since later code (and ``repr``, JSON) would recurse
or expand them.
"""

import codecs
import io
import math
import pickle
import pickletools

import numpy as np

MAX_DEPTH = 64  # nesting of lists, tuples, dicts and sets
#: Opcodes the pre-scan reads (1-3 us each): a train file holds two per batch trained (its
#: cost, twice) and a few thousand besides; 5 million is 1,000 epochs of MNIST at batch 32,
#: and a scan of 5-15 seconds.
MAX_OPCODES = 5_000_000
#: The kinds of dtype a model file may hold: booleans, numbers and strings.
PLAIN_KINDS = "biufcSU"
REFUSED_OPCODES = {
    "INST": "class instances",
    "OBJ": "class instances",
    "NEWOBJ": "class instances",
    "NEWOBJ_EX": "class instances",
    "PERSID": "persistent ids",
    "BINPERSID": "persistent ids",
    "EXT1": "extension codes",
    "EXT2": "extension codes",
    "EXT4": "extension codes",
    "NEXT_BUFFER": "out-of-band buffers",
    "READONLY_BUFFER": "out-of-band buffers",
}


class UnsafePickle(Exception):
    """A pickle this loader refuses (or cannot read); the message says why, in one line."""


# ----- the constructors a model file may call, each checking its arguments -----


def _nbytes(value):
    """The length of a bytes-like value, else None."""
    return len(value) if isinstance(value, (bytes, bytearray)) else None


def _plain_dtype(dtype, what="dtype"):
    if not isinstance(dtype, np.dtype):
        raise UnsafePickle(f"{what}: expected a NumPy dtype, got {type(dtype).__name__}")
    if dtype.kind not in PLAIN_KINDS or dtype.hasobject or dtype.fields or dtype.subdtype:
        raise UnsafePickle(f"refused dtype {dtype}: a model file holds only numbers and strings")
    return dtype


def _shape(shape, what):
    if not isinstance(shape, tuple) or not all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape
    ):
        raise UnsafePickle(f"{what}: a shape must be a tuple of sizes >= 0, got {shape!r:.60}")
    if len(shape) > 32:
        raise UnsafePickle(f"{what}: {len(shape)} dimensions (NumPy allows 32)")
    return shape


def _check_data(shape, dtype, data, what):
    """``data`` must hold exactly the bytes of an array of ``shape`` and ``dtype``."""
    need, have = math.prod(shape) * dtype.itemsize, _nbytes(data)
    if have is None:
        raise UnsafePickle(f"{what}: its data must be bytes, got {type(data).__name__}")
    if need != have:
        raise UnsafePickle(
            f"{what}: shape {shape} of {dtype} needs {need:,} bytes but the file holds {have:,}"
        )


def _make_dtype(obj, align=False, copy=True):
    """np.dtype(obj) for a plain type code such as 'f8' or '<i8' only."""
    if not isinstance(obj, str) or len(obj) > 16:
        raise UnsafePickle(f"refused dtype {obj!r:.40}: expected a type code such as 'f8'")
    if align not in (0, 1) or copy not in (0, 1):
        raise UnsafePickle("dtype: align and copy must be booleans")
    try:
        dtype = np.dtype(obj, bool(align), True)  # a copy: BUILD may set its byte order
    except (TypeError, ValueError):
        raise UnsafePickle(f"unknown dtype {obj!r}") from None
    return _plain_dtype(dtype)


def _dtype_state(dtype, state):
    """The dtype ``dtype.__setstate__(state)`` gives; only NumPy's own states are admitted."""
    if isinstance(state, tuple) and len(state) > 1 and state[1] in ("<", ">", "|", "="):
        candidate = dtype.newbyteorder(state[1])
        if candidate.__reduce__()[2] == state:
            return candidate
    raise UnsafePickle(f"refused state {state!r:.80} for dtype {dtype}")


def _reconstruct(subtype, shape, typecode):
    if subtype is not np.ndarray:
        raise UnsafePickle("_reconstruct: only plain NumPy arrays may be rebuilt")
    _reconstruct_checks(shape, typecode)
    return _RECONSTRUCT(subtype, shape, typecode)


def _array_state(state):
    """Check the state ``ndarray.__setstate__`` gets: (version,) shape, dtype, fortran, data."""
    if not isinstance(state, tuple) or len(state) not in (4, 5):
        raise UnsafePickle(f"refused array state of type {type(state).__name__}")
    shape, dtype, fortran, data = state[-4:]
    _shape(shape, "array")
    _plain_dtype(dtype.value if isinstance(dtype, _Sym) else dtype, "array")
    if fortran not in (0, 1):
        raise UnsafePickle("array: its Fortran flag must be a boolean")
    _check_data(shape, dtype.value if isinstance(dtype, _Sym) else dtype, data, "array")


def _scalar(dtype, data):
    _scalar_checks(dtype, data)
    return _SCALAR(dtype, data)


def _frombuffer(buffer, dtype, shape, order):
    _frombuffer_checks(buffer, dtype, shape, order)
    return _FROMBUFFER(buffer, dtype, shape, order)


def _latin1(encoding):
    return isinstance(encoding, str) and encoding.lower().replace("-", "") in ("latin1",)


def _encode(text, encoding="utf-8"):
    """codecs.encode as protocols 0-2 store bytes: a str of code points < 256, latin-1."""
    if not isinstance(text, str) or not _latin1(encoding):
        raise UnsafePickle("_codecs.encode: only latin-1 encoding of a string is admitted")
    return codecs.encode(text, "latin1")


def _bytearray(*args):
    """bytearray of bytes (protocols 3-4) or of a latin-1 string (0-2); never of a size."""
    if args == ():
        return bytearray()
    if len(args) == 1 and isinstance(args[0], (bytes, bytearray)):
        return bytearray(args[0])
    if len(args) == 2 and isinstance(args[0], str) and _latin1(args[1]):
        return bytearray(args[0], "latin1")
    raise UnsafePickle("bytearray: only bytes or a latin-1 string are admitted")


def _complex(real=0.0, imag=0.0):
    if not all(isinstance(v, (int, float)) for v in (real, imag)):
        raise UnsafePickle("complex: only two numbers are admitted")
    return complex(real, imag)


_example = np.zeros(1)
_RECONSTRUCT = _example.__reduce__()[0]
_FROMBUFFER = _example.__reduce_ex__(5)[0]  # protocol 5 stores contiguous data as a buffer
_SCALAR = np.float64(0).__reduce__()[0]


def _allowed_globals():
    """The only globals a model file may name, mapped to their checked stand-ins: what NumPy
    1.x and 2.x pickles of arrays, dtypes and scalars reference (numpy.core became
    numpy._core in 2.0), and plain builtins, named the Python 2 way too."""
    allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): _make_dtype}
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = _reconstruct
        allowed[(f"{core}.multiarray", "scalar")] = _scalar
        allowed[(f"{core}.numeric", "_frombuffer")] = _frombuffer
    for module in ("builtins", "__builtin__"):
        allowed[(module, "set")] = set
        allowed[(module, "frozenset")] = frozenset
        allowed[(module, "complex")] = _complex
        allowed[(module, "bytearray")] = _bytearray
    allowed[("_codecs", "encode")] = _encode  # protocols 0-2 store bytes with it
    return allowed


ALLOWED = _allowed_globals()


def _global(module, name):
    try:
        return ALLOWED[(module, name)]
    except KeyError:
        raise UnsafePickle(
            f"refused global '{module}.{name}': a model file may hold only NumPy arrays "
            "and plain data"
        ) from None


# ----- the pre-scan -----


class _Sym:
    """A placeholder on the pre-scan's stack for what is not a plain literal: a global
    (value: the callable), a dtype (value: the dtype), an array awaiting its state, or any
    other object."""

    __slots__ = ("kind", "value")

    def __init__(self, kind, value=None):
        self.kind, self.value = kind, value


_OTHER = _Sym("other")
_CONSTANTS = {"NONE": None, "NEWTRUE": True, "NEWFALSE": False, "EMPTY_TUPLE": ()}
#: Opcodes that make a container: an empty set is 216 bytes made from one byte of file.
_CONTAINERS = {"EMPTY_LIST", "EMPTY_DICT", "EMPTY_SET", "LIST", "DICT", "FROZENSET", "TUPLE"}
_CONTAINERS |= {"TUPLE1", "TUPLE2", "TUPLE3"}


def max_containers(size):
    """How many containers a file of ``size`` bytes may make: the reference pickle makes
    about one per 300 bytes (a tuple per cost entry), files written by train fewer."""
    return 10_000 + size // 32


def _reduce(func, args):
    """The placeholder for ``func(*args)``, after the argument checks the real call makes."""
    if not isinstance(args, tuple):
        raise UnsafePickle("REDUCE: the arguments must be a tuple")
    real = tuple(a.value if isinstance(a, _Sym) and a.kind == "dtype" else a for a in args)
    if func is _make_dtype:
        return _Sym("dtype", _make_dtype(*real))
    if func is _reconstruct:
        if len(args) != 3 or not (isinstance(args[0], _Sym) and args[0].value is np.ndarray):
            raise UnsafePickle("_reconstruct: only plain NumPy arrays may be rebuilt")
        _reconstruct_checks(*real[1:])
        return _Sym("array")
    if func is _scalar or func is _frombuffer:
        (_scalar_checks if func is _scalar else _frombuffer_checks)(*real)
        return _OTHER
    if func in (_encode, _bytearray):
        return func(*real)  # bytes from the file's own strings: at most its size
    if func is _complex:
        _complex(*real)
        return _OTHER
    if func in (set, frozenset) and len(args) <= 1:
        return _OTHER
    raise UnsafePickle(f"refused call of {getattr(func, '__name__', func)}")


def _reconstruct_checks(shape, typecode):
    _shape(shape, "_reconstruct")
    code = typecode.decode("latin1") if isinstance(typecode, bytes) else typecode
    if math.prod(shape) * _make_dtype(code).itemsize > 64:
        raise UnsafePickle(f"_reconstruct: refused initial shape {shape}")


def _scalar_checks(dtype, data):
    _plain_dtype(dtype, "scalar")
    _check_data((), dtype, data, "scalar")


def _frombuffer_checks(buffer, dtype, shape, order):
    _plain_dtype(dtype, "array")
    _shape(shape, "array")
    if order not in ("C", "F"):
        raise UnsafePickle(f"array: order must be 'C' or 'F', got {order!r:.20}")
    _check_data(shape, dtype, buffer, "array")


def _build(target, state):
    """Check BUILD (``target.__setstate__(state)``): only dtypes and new arrays have one."""
    if isinstance(target, _Sym) and target.kind == "dtype":
        target.value = _dtype_state(target.value, state)
    elif isinstance(target, _Sym) and target.kind == "array":
        _array_state(state)
        target.kind = "other"  # an array is given its state once
    else:
        raise UnsafePickle("BUILD: only NumPy dtypes and arrays may be given a state")


def prescan(data):
    """Refuse, with UnsafePickle, a pickle whose loading could run code, crash or allocate
    more than ``data`` holds. Returns the number of opcodes."""
    size, stack, marks, memo, count, made = len(data), [], [], {}, 0, 0
    most = max_containers(size)

    def pop_mark():
        if not marks:
            raise UnsafePickle("not a valid pickle (an opcode needs a MARK that is missing)")
        start = marks.pop()
        items = stack[start:]
        del stack[start:]
        return items

    def pop(n=1):
        if len(stack) - (marks[-1] if marks else 0) < n:
            raise UnsafePickle("not a valid pickle (its stack runs empty)")
        items = stack[len(stack) - n :]
        del stack[len(stack) - n :]
        return items

    try:
        for op, arg, pos in pickletools.genops(io.BytesIO(data)):
            count += 1
            if count > MAX_OPCODES:
                raise UnsafePickle(
                    f"more than {MAX_OPCODES:,} opcodes (a model file needs far fewer)"
                )
            name = op.name
            if name in _CONTAINERS:
                made += 1
                if made > most:
                    raise UnsafePickle(
                        f"more than {most:,} containers for a file of {size:,} bytes"
                    )
            if name in REFUSED_OPCODES:
                raise UnsafePickle(
                    f"refused opcode {name}: a model file holds no {REFUSED_OPCODES[name]}"
                )
            if name in ("PROTO", "STOP"):
                continue
            if name == "FRAME":
                if pos + 9 + arg > size:
                    raise UnsafePickle(
                        f"not a valid pickle (pickle data was truncated: a frame of {arg:,} "
                        "bytes runs past its end)"
                    )
                continue
            if name == "MARK":
                marks.append(len(stack))
            elif name == "POP":
                if marks and marks[-1] == len(stack):
                    marks.pop()
                else:
                    pop()
            elif name == "POP_MARK":
                pop_mark()
            elif name == "DUP":
                stack.append(pop()[0])
                stack.append(stack[-1])
            elif op.stack_before == [] and len(op.stack_after) == 1 and name not in (
                "EMPTY_LIST", "EMPTY_DICT", "EMPTY_SET", "GLOBAL", "GET", "BINGET", "LONG_BINGET",
            ):  # fmt: skip
                stack.append(_CONSTANTS[name] if name in _CONSTANTS else arg)  # a literal
            elif name in ("EMPTY_LIST", "EMPTY_DICT", "EMPTY_SET"):
                stack.append(_OTHER)  # containers need no identity here: only dtypes and arrays
            elif name in ("LIST", "DICT", "FROZENSET"):
                pop_mark()
                stack.append(_OTHER)
            elif name == "TUPLE":
                stack.append(tuple(pop_mark()))
            elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
                stack.append(tuple(pop(int(name[-1]))))
            elif name in ("APPEND", "SETITEM"):
                pop(1 if name == "APPEND" else 2)
                pop()  # the container stays on the stack
                stack.append(_OTHER)
            elif name in ("APPENDS", "SETITEMS", "ADDITEMS"):
                pop_mark()
                pop()
                stack.append(_OTHER)
            elif name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
                index = len(memo) if name == "MEMOIZE" else arg
                if index >= count:
                    raise UnsafePickle(f"memo index {index:,} at byte {pos} is out of bounds")
                memo[index] = pop()[0]
                stack.append(memo[index])
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                if arg not in memo:
                    raise UnsafePickle(f"memo index {arg:,} at byte {pos} was never stored")
                stack.append(memo[arg])
            elif name in ("GLOBAL", "STACK_GLOBAL"):
                module, attr = arg.split(" ", 1) if name == "GLOBAL" else pop(2)
                if not (isinstance(module, str) and isinstance(attr, str)):
                    raise UnsafePickle("STACK_GLOBAL: module and name must be strings")
                stack.append(_Sym("global", _global(module, attr)))
            elif name == "REDUCE":
                func, args = pop(2)
                if not (isinstance(func, _Sym) and func.kind == "global"):
                    raise UnsafePickle("REDUCE: only admitted globals may be called")
                stack.append(_reduce(func.value, args))
            elif name == "BUILD":
                target, state = pop(2)
                _build(target, state)
                stack.append(target)
            else:
                raise UnsafePickle(f"refused opcode {name}")
    except UnsafePickle:
        raise
    except ValueError as exc:  # genops: truncated data, bad argument, unknown opcode
        if "exhausted" in str(exc):  # the messages of the unpickler itself
            raise UnsafePickle("truncated file (the pickle ends early)") from None
        if "remain" in str(exc):
            raise UnsafePickle("not a valid pickle (pickle data was truncated)") from None
        raise UnsafePickle(f"not a valid pickle ({exc})") from None
    except Exception as exc:  # say, a constructor given the wrong number of arguments
        raise UnsafePickle(f"corrupt pickle ({type(exc).__name__}: {exc})") from None
    return count


# ----- loading -----


class _Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
        return _global(module, name)


def _check_structure(obj, budget):
    """Refuse nesting deeper than MAX_DEPTH, containers holding themselves, and shared
    references expanding to more than ``budget`` items (counted as a tree, as repr or JSON
    would see it)."""
    containers = (list, tuple, dict, set, frozenset)
    sizes = {}  # id -> expanded size of a finished container
    path = set()  # ids of the containers being walked
    stack = [(obj, 0, False)]
    while stack:
        node, depth, done = stack.pop()
        key = id(node)
        if done:
            children = node.items() if isinstance(node, dict) else node
            items = [x for pair in children for x in pair] if isinstance(node, dict) else children
            total = 1 + sum(sizes.get(id(x), 1) for x in items)
            if total > budget:
                raise UnsafePickle(
                    f"its containers expand to over {budget:,} items through shared references"
                )
            sizes[key] = total
            path.discard(key)
            continue
        if not isinstance(node, containers) or key in sizes:
            continue
        if key in path:
            raise UnsafePickle("a container holds itself")
        if depth >= MAX_DEPTH:
            raise UnsafePickle(f"containers nested deeper than {MAX_DEPTH} levels")
        path.add(key)
        stack.append((node, depth, True))
        children = node.items() if isinstance(node, dict) else node
        for child in children:
            for x in child if isinstance(node, dict) else (child,):
                if isinstance(x, containers):
                    stack.append((x, depth + 1, False))


def loads(data):
    """The object pickled in ``data``, built only from NumPy arrays, dtypes, scalars and
    plain data, or UnsafePickle saying why not."""
    if not data:
        raise UnsafePickle("empty file")
    count = prescan(data)
    try:
        obj = _Unpickler(io.BytesIO(data)).load()
    except UnsafePickle:
        raise
    except EOFError:
        raise UnsafePickle("truncated file (the pickle ends early)") from None
    except pickle.UnpicklingError as exc:
        raise UnsafePickle(f"not a valid pickle ({exc})") from None
    except Exception as exc:  # any malformed stream: the file is untrusted input
        raise UnsafePickle(f"corrupt pickle ({type(exc).__name__}: {exc})") from None
    _check_structure(obj, 2 * count + 1000)
    return obj
