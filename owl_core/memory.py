"""Give heap memory freed by cache evictions back to the operating system.

glibc's allocator keeps freed chunks of the heap for reuse instead of returning them, so a
process whose embedding cache evicts steadily grows far past the cache's byte budget even
though nothing leaks (measured with `bench/reliability.py`: +289 MiB of RSS for a 16 MiB
budget over 1,000 images; `malloc_trim(0)` brought it back to +16 MiB). `release_free_memory`
asks glibc to return what it holds; elsewhere (musl, macOS, Windows) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading

_lock = threading.Lock()
_trim = None
_looked_up = False


def _malloc_trim():
    global _trim, _looked_up
    if not _looked_up:
        _looked_up = True
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            fn = libc.malloc_trim
        except (OSError, AttributeError):
            fn = None
        else:
            fn.argtypes = [ctypes.c_size_t]
            fn.restype = ctypes.c_int
        _trim = fn
    return _trim


def release_free_memory() -> bool:
    """Return the allocator's free heap memory to the OS; False where that is not possible."""
    with _lock:
        fn = _malloc_trim()
        if fn is None:
            return False
        fn(0)
        return True
