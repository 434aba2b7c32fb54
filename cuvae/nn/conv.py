"""Conv2D and ConvTranspose2D (NCHW), forward beside backward, written once against ``xp``.

Both layers are im2col/col2im plus one large matrix product:

- ``im2col`` copies every k x k window of a padded input into a row of a
  (N*Ho*Wo, C*k*k) matrix through a strided view (``as_strided``, which NumPy
  and CuPy both have), so the copy is one kernel on either backend;
- ``col2im`` is its adjoint: it adds the rows back, looping over the k*k kernel
  offsets (each a strided slice, no ``np.add.at``), so it runs k*k array adds.

Conv2D's backward w.r.t. its input is col2im of ``dout @ W``; ConvTranspose2D's
forward *is* that operation, and its backward is Conv2D's forward. So the two
layers share the same two helpers.

Shapes and layouts (PyTorch's, so weights can be compared one to one):
- Conv2D: x (N, C, H, W), W (F, C, k, k), b (F,), out (N, F, Ho, Wo) with
  Ho = (H + 2p - k) // s + 1;
- ConvTranspose2D: x (N, Cin, H, W), W (Cin, Cout, k, k), b (Cout,), out
  (N, Cout, Ho, Wo) with Ho = (H - 1) s - 2p + k + op (op = output padding < s).

Caches are return values: each forward returns ``(out, cache)`` and each
backward takes that cache. Buffers may be passed in (``out=``, ``cols=``) so a
training step reuses its memory; missing ones are allocated.
"""

from __future__ import annotations


def conv_out_size(n: int, k: int, s: int, p: int) -> int:
    return (n + 2 * p - k) // s + 1


def conv_transpose_out_size(n: int, k: int, s: int, p: int, op: int = 0) -> int:
    return (n - 1) * s - 2 * p + k + op


# ---- helpers: padding, im2col and its adjoint -------------------------------------------


def _strided(xp):
    return xp.lib.stride_tricks.as_strided


def pad(xp, x, p: int, out=None, extra: int = 0):
    """Zero-pad the last two axes by p (and ``extra`` more at the bottom/right)."""
    if p == 0 and extra == 0:
        return x
    N, C, H, W = x.shape
    shape = (N, C, H + 2 * p + extra, W + 2 * p + extra)
    if out is None:
        out = xp.zeros(shape, x.dtype)
    else:
        out[...] = 0  # borders must be zero; the interior is overwritten below
    out[:, :, p : p + H, p : p + W] = x
    return out


def im2col(xp, xpad, k: int, s: int, Ho: int, Wo: int, out=None):
    """(N, C, Hp, Wp) padded input -> (N*Ho*Wo, C*k*k) windows; row (n, i, j), column (c, u, v)."""
    N, C = xpad.shape[:2]
    sN, sC, sH, sW = xpad.strides
    view = _strided(xp)(xpad, shape=(N, Ho, Wo, C, k, k), strides=(sN, s * sH, s * sW, sC, sH, sW))
    if out is None:
        out = xp.empty((N * Ho * Wo, C * k * k), xpad.dtype)
    out.reshape(N, Ho, Wo, C, k, k)[...] = view
    return out


def col2im(xp, cols, shape, k: int, s: int, Ho: int, Wo: int, out=None):
    """Adjoint of :func:`im2col`: add (N*Ho*Wo, C*k*k) rows back into a zeroed (N, C, Hp, Wp) array."""
    N, C = shape[:2]
    if out is None:
        out = xp.zeros(shape, cols.dtype)
    else:
        out[...] = 0
    c6 = cols.reshape(N, Ho, Wo, C, k, k).transpose(0, 3, 4, 5, 1, 2)  # (N, C, k, k, Ho, Wo) view
    for u in range(k):
        for v in range(k):
            out[:, :, u : u + s * (Ho - 1) + 1 : s, v : v + s * (Wo - 1) + 1 : s] += c6[:, :, u, v]
    return out


def _nchw_from_rows(rows, N, H, W, out):
    """(N*H*W, F) rows in (n, i, j) order -> out (N, F, H, W)."""
    out[...] = rows.reshape(N, H, W, -1).transpose(0, 3, 1, 2)
    return out


def _rows_from_nchw(xp, x, out=None):
    """(N, F, H, W) -> (N*H*W, F) contiguous rows."""
    N, F, H, W = x.shape
    if out is None:
        out = xp.empty((N * H * W, F), x.dtype)
    out.reshape(N, H, W, F)[...] = x.transpose(0, 2, 3, 1)
    return out


# ---- Conv2D ------------------------------------------------------------------------------


def conv2d(xp, x, W, b, stride: int = 1, padding: int = 0, out=None, cols=None, xpad=None):
    """out = conv(x, W) + b; returns (out, cache) with cache = (cols, x.shape, stride, padding)."""
    N, C, H, Wd = x.shape
    F, C2, k, k2 = W.shape
    if C2 != C or k2 != k:
        raise ValueError(f"conv2d: weight {W.shape} does not fit input {x.shape}")
    Ho, Wo = conv_out_size(H, k, stride, padding), conv_out_size(Wd, k, stride, padding)
    cols = im2col(xp, pad(xp, x, padding, xpad), k, stride, Ho, Wo, cols)
    if out is None:
        out = xp.empty((N, F, Ho, Wo), x.dtype)
    rows = cols @ W.reshape(F, C * k * k).T  # (N*Ho*Wo, F)
    _nchw_from_rows(rows, N, Ho, Wo, out)
    out += b.reshape(1, F, 1, 1)
    return out, (cols, x.shape, stride, padding)


def conv2d_backward(xp, dout, cache, W, dW, db, dx=None, dpad=None):
    """Write dW and db (overwritten, not accumulated); dx too when given. Returns dx."""
    cols, (N, C, H, Wd), s, p = cache
    F, _, k, _ = W.shape
    Ho, Wo = dout.shape[2:]
    drows = _rows_from_nchw(xp, dout)  # (N*Ho*Wo, F)
    dW.reshape(F, C * k * k)[...] = drows.T @ cols  # (matmul with out= skips BLAS in NumPy)
    xp.sum(dout, axis=(0, 2, 3), out=db)
    if dx is None:
        return None
    dcols = drows @ W.reshape(F, C * k * k)  # (N*Ho*Wo, C*k*k)
    full = col2im(xp, dcols, (N, C, H + 2 * p, Wd + 2 * p), k, s, Ho, Wo, dpad)
    dx[...] = full[:, :, p : p + H, p : p + Wd]
    return dx


# ---- ConvTranspose2D (the adjoint of Conv2D in its input) -------------------------------------


def conv_transpose2d(xp, x, W, b, stride: int = 1, padding: int = 0, output_padding: int = 0, out=None, full=None):
    """out = conv_transpose(x, W) + b; returns (out, cache) with cache = (x rows, x.shape, s, p, op)."""
    N, Cin, H, Wd = x.shape
    Cin2, Cout, k, k2 = W.shape
    if Cin2 != Cin or k2 != k:
        raise ValueError(f"conv_transpose2d: weight {W.shape} does not fit input {x.shape}")
    oph, opw = (output_padding, output_padding) if isinstance(output_padding, int) else output_padding
    if not (0 <= oph < stride and 0 <= opw < stride):
        raise ValueError(f"output_padding must be in [0, stride), got {output_padding} with stride {stride}")
    s, p, op = stride, padding, (oph, opw)
    Ho = conv_transpose_out_size(H, k, s, p, oph)
    Wo = conv_transpose_out_size(Wd, k, s, p, opw)
    xrows = _rows_from_nchw(xp, x)  # (N*H*W, Cin)
    cols = xrows @ W.reshape(Cin, Cout * k * k)  # (N*H*W, Cout*k*k)
    full = col2im(xp, cols, (N, Cout, Ho + 2 * p, Wo + 2 * p), k, s, H, Wd, full)
    if out is None:
        out = xp.empty((N, Cout, Ho, Wo), x.dtype)
    out[...] = full[:, :, p : p + Ho, p : p + Wo]
    out += b.reshape(1, Cout, 1, 1)
    return out, (xrows, x.shape, s, p, op)


def conv_transpose2d_backward(xp, dout, cache, W, dW, db, dx=None, dpad=None, dcols=None):
    """Write dW and db (overwritten); dx too when given. Returns dx."""
    xrows, (N, Cin, H, Wd), s, p, op = cache
    _, Cout, k, _ = W.shape
    # input position (i, j) wrote padded rows i*s .. i*s + k - 1 (the padded dout has
    # (H - 1) s + k + op >= (H - 1) s + k rows), so its gradient is that window of the padded dout
    dfull = pad(xp, dout, p, dpad)
    dcols = im2col(xp, dfull, k, s, H, Wd, dcols)  # (N*H*W, Cout*k*k)
    dW.reshape(Cin, Cout * k * k)[...] = xrows.T @ dcols
    xp.sum(dout, axis=(0, 2, 3), out=db)
    if dx is None:
        return None
    drows = dcols @ W.reshape(Cin, Cout * k * k).T  # (N*H*W, Cin)
    _nchw_from_rows(drows, N, H, Wd, dx)
    return dx
