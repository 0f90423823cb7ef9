"""Turn a request's `ImageRef` into image bytes or pixels, refusing what a server must not do.

- ``base64``: decoded here, so a string from a request is never tried as a server path.
- ``numpy``: base64 of a pickled array (the reference's form) read by an allow-list unpickler
  that can only rebuild numpy arrays; anything needing other code is refused, never run. The
  reference sends BGR (OpenCV) arrays, so 3-channel arrays are flipped to RGB.
- ``file``: always refused (the server never opens its own files for a client).
- ``url``: refused unless URL images are switched on; then fetched SSRF-safely: http/https
  only, the host resolved once and every address checked (no private, loopback, link-local,
  multicast, reserved or unspecified addresses, IPv6 and IPv4-mapped included), the connection
  made to the checked address (no DNS rebinding), redirects followed by hand and checked again,
  and the size and time bounded.
"""

from __future__ import annotations

import base64
import binascii
import io
import ipaddress
import pickle
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import urljoin, urlsplit, urlunsplit

import numpy as np

from owl_core.errors import ImageError, LimitError
from owl_core.images import array_to_rgb, decode_base64


class ImageRefusedError(ImageError):
    """An image reference the server is configured not to follow (file, url, private host)."""


@dataclass(frozen=True)
class UrlPolicy:
    """How URL images are fetched (only when `allowed`)."""

    allowed: bool = False
    max_bytes: int = 20 * 1024**2
    timeout_s: float = 10.0
    max_redirects: int = 3


#: host, port -> addresses; replaced in tests to simulate DNS answers.
Resolver = Callable[[str, int], list[str]]


def system_resolver(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (IPv4 and IPv6)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError) as exc:
        raise ImageError(f"image URL host {host!r} could not be resolved ({exc}).") from None
    return sorted({info[4][0] for info in infos})


def is_public_address(address: str) -> bool:
    """Whether connecting to `address` reaches the public internet only.

    IPv4-mapped / compatible IPv6 addresses are judged by their IPv4 part; anything private,
    loopback, link-local, multicast, reserved, unspecified or otherwise not global is refused.
    """
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if ip.ipv4_mapped is not None:
            return is_public_address(str(ip.ipv4_mapped))
        if embedded is not None and not is_public_address(str(embedded)):
            return False
    return bool(ip.is_global) and not (ip.is_private or ip.is_loopback or ip.is_link_local
                                       or ip.is_multicast or ip.is_reserved
                                       or ip.is_unspecified)


def load_numpy(text: str, label: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB from base64 of a pickled BGR array, loaded as data only."""
    try:
        raw = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ImageError(f"{label}: type 'numpy' needs base64 of a pickled numpy array; the "
                         "value is not valid base64.") from None
    try:
        array = _ArrayUnpickler(io.BytesIO(raw)).load()
    except _RefusedGlobal as exc:
        raise ImageRefusedError(f"{label}: refused: the numpy payload needs code ({exc}) to "
                                "load; send a plain pickled numpy array, or use type "
                                "'base64' with a PNG/JPEG.") from None
    except Exception as exc:  # noqa: BLE001 -- malformed pickles raise any type
        raise ImageError(f"{label}: type 'numpy' could not be read as a pickled numpy array "
                         f"({type(exc).__name__}). Use type 'base64' with a PNG/JPEG.") from None
    if isinstance(array, _ArrayState):
        if array.array is None:
            raise ImageError(f"{label}: the pickled numpy array carries no pixel data (its "
                             "state step is missing); send the array as pickle.dumps(arr).")
        array = array.array
    if not isinstance(array, np.ndarray):
        raise ImageError(f"{label}: type 'numpy' must hold a numpy array, got "
                         f"{type(array).__name__}.")
    if array.ndim == 3 and array.shape[2] == 3:
        array = array[:, :, ::-1]  # the reference's arrays are BGR (OpenCV)
    return array_to_rgb(array, label)


class _RefusedGlobal(Exception):
    pass


class _ArrayState:
    """Stands in for ``ndarray`` while unpickling: it holds pixels only from the pickle's bytes.

    numpy pickles an array as ``_reconstruct(ndarray, shape, dtype)`` followed by a state step
    ``(version, shape, dtype, is_fortran, rawdata)``. Building the real ndarray at the first
    step would hand out memory nobody wrote (a pickle may skip the state step); this object
    only becomes an array in `__setstate__`, from `rawdata` of exactly the declared size.
    """

    def __init__(self) -> None:
        self.array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        if not (isinstance(state, tuple) and len(state) == 5):
            raise ValueError("array state must be (version, shape, dtype, is_fortran, data)")
        _version, shape, dtype, is_fortran, rawdata = state
        if not isinstance(dtype, np.dtype) or dtype.hasobject:
            raise ValueError("array dtype must be a plain numeric dtype")
        if not (isinstance(shape, tuple) and all(isinstance(n, int) and n >= 0 for n in shape)):
            raise ValueError("array shape must be a tuple of non-negative ints")
        if not isinstance(rawdata, (bytes, bytearray)):
            raise ValueError("array data must be bytes")
        if len(rawdata) != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
            raise ValueError("array data does not match its shape")
        flat = np.frombuffer(bytes(rawdata), dtype=dtype)
        self.array = flat.reshape(shape, order="F" if is_fortran else "C").copy()


def _reconstruct(subtype: Any, shape: Any, dtype: Any) -> _ArrayState:
    if subtype is not _ArrayState:
        raise ValueError("only plain numpy arrays are accepted")
    return _ArrayState()


def _frombuffer(buffer: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    """Protocol 5's contiguous form: the pixels are the pickle's own (in-band) bytes."""
    if not isinstance(buffer, (bytes, bytearray)) or not isinstance(dtype, np.dtype) \
            or dtype.hasobject:
        raise ValueError("array buffer must be bytes of a plain numeric dtype")
    return np.frombuffer(bytes(buffer), dtype=dtype).reshape(shape, order=order).copy()


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and nothing else (globals on an allow-list).

    ``ndarray`` itself is never handed to the pickle: it could be called to allocate an array
    of any shape without filling it. Arrays are built only by `_ArrayState` / `_frombuffer`,
    from bytes the request carried.
    """

    _ALLOWED: ClassVar[dict[tuple[str, str], Any]] = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy.core.numeric", "_frombuffer"): _frombuffer,
        ("numpy._core.numeric", "_frombuffer"): _frombuffer,
        ("numpy", "ndarray"): _ArrayState,
        ("numpy", "dtype"): np.dtype,
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise _RefusedGlobal(f"{module}.{name}")
        return self._ALLOWED[(module, name)]


def fetch_url(url: str, policy: UrlPolicy, label: str,
              resolver: Resolver | None = None) -> bytes:
    """The bytes at `url`, fetched under `policy` (see the module docstring).

    Raises:
        ImageRefusedError: URLs switched off, a scheme other than http/https, or a host that
            resolves to a non-public address (also after a redirect).
        LimitError: the body is over `policy.max_bytes`.
        ImageError: unreachable host, HTTP error status, timeout.
    """
    import httpx

    if not policy.allowed:
        raise ImageRefusedError(f"{label}: URL images are refused by this server (it does not "
                                "fetch URLs for clients). Send the image as type 'base64', or "
                                "start the server with --allow-url-images.")
    resolve = resolver or system_resolver
    deadline = time.monotonic() + policy.timeout_s
    current = url
    for _ in range(policy.max_redirects + 1):
        target, _, headers, sni = _pinned(current, label, resolve)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ImageError(f"{label}: fetching the URL took over {policy.timeout_s:g} s.")
        try:
            with httpx.Client(trust_env=False, follow_redirects=False,
                              timeout=httpx.Timeout(remaining)) as client:
                extensions = {"sni_hostname": sni} if sni else {}
                with client.stream("GET", target, headers=headers,
                                   extensions=extensions) as response:
                    if response.is_redirect:
                        location = response.headers.get("location", "")
                        current = urljoin(current, location)
                        continue
                    if response.status_code != 200:
                        raise ImageError(f"{label}: the URL answered HTTP "
                                         f"{response.status_code}; expected 200 with an image.")
                    return _read_bounded(response, policy, deadline, label)
        except httpx.HTTPError as exc:
            raise ImageError(f"{label}: could not fetch the URL ({type(exc).__name__}).") \
                from None
    raise ImageRefusedError(f"{label}: more than {policy.max_redirects} redirects; refused.")


def _pinned(url: str, label: str, resolve: Resolver) -> tuple[str, str, dict, str | None]:
    """(url with the host replaced by a checked address, host, headers, SNI name)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ImageRefusedError(f"{label}: only http and https URLs are fetched, got "
                                f"{scheme or 'no scheme'!r}.")
    host = parts.hostname
    if not host:
        raise ImageRefusedError(f"{label}: the URL has no host name.")
    if parts.username or parts.password:
        raise ImageRefusedError(f"{label}: URLs with user names or passwords are refused.")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise ImageRefusedError(f"{label}: the URL's port is not valid.") from None
    try:
        literal = ipaddress.ip_address(host)
        addresses = [str(literal)]
    except ValueError:
        literal = None
        addresses = resolve(host, port)
    if not addresses:
        raise ImageError(f"{label}: image URL host {host!r} has no address.")
    bad = [a for a in addresses if not is_public_address(a)]
    if bad:
        raise ImageRefusedError(f"{label}: refused: the URL's host {host!r} resolves to a "
                                f"non-public address (private, loopback, link-local, multicast "
                                "or reserved); only public hosts are fetched.")
    address = addresses[0]
    shown = f"[{address}]" if ":" in address else address
    netloc = f"{shown}:{port}"
    target = urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))
    host_header = host if parts.port is None else f"{host}:{parts.port}"
    sni = host if scheme == "https" and literal is None else None
    return target, host, {"Host": host_header, "Accept": "image/*"}, sni


def _read_bounded(response: Any, policy: UrlPolicy, deadline: float, label: str) -> bytes:
    declared = response.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > policy.max_bytes:
        raise LimitError(f"{label}: the image at the URL is {int(declared):,} bytes, over the "
                         f"limit of {policy.max_bytes:,}.")
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > policy.max_bytes:
            raise LimitError(f"{label}: the image at the URL is over the limit of "
                             f"{policy.max_bytes:,} bytes.")
        if time.monotonic() > deadline:
            raise ImageError(f"{label}: fetching the URL took over {policy.timeout_s:g} s.")
        chunks.append(chunk)
    data = b"".join(chunks)
    if not data:
        raise ImageError(f"{label}: the URL returned no data.")
    return data


def resolve_ref(kind: str, value: str, label: str, policy: UrlPolicy,
                resolver: Resolver | None = None) -> bytes | np.ndarray:
    """Image bytes (encoded file) or RGB pixels for one `ImageRef`'s type and value."""
    if kind == "base64":
        if not value.strip():
            raise ImageError(f"{label}: the base64 value is empty.")
        return decode_base64(value)
    if kind == "numpy":
        return load_numpy(value, label)
    if kind == "url":
        return fetch_url(value, policy, label, resolver)
    if kind == "file":
        raise ImageRefusedError(f"{label}: 'file' images are refused: the server never reads "
                                "its own files for a client. Send the image as type 'base64'.")
    raise ImageError(f"{label}: unknown image type {kind!r}; use base64, numpy or url.")
