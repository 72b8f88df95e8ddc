"""Host-resident render state for outputs that do not fit on the device.

The image, Adam's two moments and the level's content image live in host memory (NumPy arrays,
or memory-mapped files under `state_dir`), and tile windows stream to the device:

- pass 1 sends each batch of windows and gets back its Gram sums (a few MB per batch);
- pass 2 goes tile row by tile row. Each batch's windows (image and content) go to the device,
  which computes the content features and the tile gradients; the gradients are added into a
  band of rows on the host. Once a tile row is done, the rows above the next row's windows have
  their final gradient, so Adam updates them there and then. That is exact: later tile rows never
  read those rows again in this step, and they receive no more gradient.

The host keeps the device busy (issue 16 §3): windows are gathered, image and content together,
into a few reused 64-byte-aligned buffers that the CPU backend takes without a copy; the next
batch is dispatched before the current one's gradient is read, so the host adds gradients into
the band and updates rows while the device computes; the loss terms are read once per step;
Adam on a finished band is launched asynchronously (the CPU backend, whole chunks, no padding
copies) and written back when the next band comes; the heap is trimmed once per step.
`StepTimes` records where a step's time goes (host work vs waiting for the device).

Host memory per output pixel: image 12 B (fp32) + Adam's first moment 6 B (bf16, as optax's
`mu_dtype`) + its second moment 12 B (fp32) + content 3 B (8-bit) = 33 B, plus two bands of
gradient rows (tile + 2·halo rows each: one filling, one being read by Adam), Adam's results
for one band and a few window buffers; nothing else scales with the image.
The first moment is bfloat16 on the device path too (`optimize.ADAM_MU_DTYPE`); the one
difference from it is the content target, made from the level's content quantised to 8 bits
(as the source photo was), far below what shows in a print.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .layers import layer_level
from .objective import (
    LossSpec,
    batch_grams,
    features,
    layer_counts,
    padded_masks,
    style_args,
    style_cotangents,
    style_value,
    tile_core,
    tile_surrogate,
    window_masks,
    zeros_grams,
)
from .optimize import ADAM_MU_DTYPE, make_optimizer
from .pyramid import resize_into
from .runtime import trim_heap
from .tiling import TileGrid

BYTES_PER_PIXEL = 12 + 6 + 12 + 3
#: Adam updates this many pixels of rows at a time, so its temporaries stay small at any width.
ROW_CHUNK_PIXELS = 1 << 18
#: Tile batches in flight: the host gathers the next batch's windows (and updates finished
#: rows) while the device computes the one before.
PIPELINE_DEPTH = 2
#: Band-wise Adam keeps at most this many launched chunks' results (30 B/px of their rows)
#: before writing the oldest back: a whole band's would be ~63 MB at 4096 px wide.
ADAM_IN_FLIGHT = 2


@dataclass
class StepTimes:
    """Where one host-resident step's wall time goes, in seconds by part: `gather` (window
    copies out of the host arrays, and their transfer to the device: none on the CPU backend,
    which takes the aligned buffers as they are), `dispatch` (launching the device's work),
    `device` (the host waiting for the device), `band` (adding tile gradients into the band
    of rows), `adam` (launching band updates, writing them back), `trim` (heap trims), and
    `total`. Passed through a step rather than kept globally, so that concurrent renders and
    the bench each get their own; what is not `device` is host time the device does not hide.
    """

    seconds: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def part(self, name: str) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - t)

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    @property
    def device(self) -> float:
        """Seconds the host waited for the device."""
        return self.seconds.get("device", 0.0)

    @property
    def host(self) -> float:
        """The rest of the step's wall time: host work the device did not hide."""
        return max(0.0, self.seconds.get("total", 0.0) - self.device)


#: The CPU backend takes a NumPy array without copying it when its data is this aligned.
ALIGN = 64


def aligned_zeros(shape: tuple[int, ...], dtype) -> np.ndarray:
    """np.zeros(shape, dtype) whose data starts on an ALIGN-byte boundary, so that
    `jax.device_put` on the CPU backend uses it in place (a misaligned array is copied)."""
    n = int(np.prod(shape)) * np.dtype(dtype).itemsize
    raw = np.zeros(n + ALIGN, np.uint8)
    start = -raw.ctypes.data % ALIGN
    return raw[start : start + n].view(dtype).reshape(shape)


def _alloc(state_dir: Path | None, name: str, shape, dtype) -> np.ndarray:
    """A zeroed array in RAM, or memory-mapped at state_dir/name.npy (a new file reads as
    zeros; its pages are written as the render fills them). Either way its data is aligned
    (an .npy header is padded to 64 bytes), so Adam's rows reach the CPU backend uncopied."""
    if state_dir is None:
        return aligned_zeros(shape, dtype)
    state_dir.mkdir(parents=True, exist_ok=True)
    return np.lib.format.open_memmap(state_dir / f"{name}.npy", "w+", dtype, shape)


@dataclass
class HostState:
    """One level's image, Adam moments and content, in host memory or memory-mapped files.

    The moments are allocated at the first Adam update (or restore), after the image and the
    content have been resized into the state, so peak memory stays at the state's own
    BYTES_PER_PIXEL. The first moment is held as raw bfloat16 bits (uint16 on disk, as .npy
    has no bfloat16) and viewed as bfloat16.
    """

    x: np.ndarray
    content: np.ndarray  # uint8
    state_dir: Path | None = None
    t: int = 0
    _moments: tuple[np.ndarray, np.ndarray] | None = None

    @classmethod
    def allocate(cls, shape: tuple[int, int, int], state_dir: Path | None) -> HostState:
        """Zeroed image (fp32) and content (uint8): fill them with `pyramid.resize_into`."""
        return cls(
            x=_alloc(state_dir, "image", shape, np.float32),
            content=_alloc(state_dir, "content", shape, np.uint8),
            state_dir=state_dir,
        )

    @classmethod
    def create(cls, x: np.ndarray, content: np.ndarray, state_dir: Path | None) -> HostState:
        """The state of start image `x` and float `content` (either at any size)."""
        state = cls.allocate(x.shape, state_dir)
        resize_into(x, state.x)
        resize_into(content, state.content)
        return state

    @property
    def m(self) -> np.ndarray:
        return self._moment_arrays()[0]

    @property
    def v(self) -> np.ndarray:
        return self._moment_arrays()[1]

    def _moment_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        if self._moments is None:
            shape = self.x.shape
            self._moments = (
                _alloc(self.state_dir, "adam_m", shape, np.uint16).view(ADAM_MU_DTYPE),
                _alloc(self.state_dir, "adam_v", shape, np.float32),
            )
        return self._moments

    def unlink_files(self) -> None:
        """Remove the level's memory-mapped files (in RAM mode there are none), as soon as the
        render needs only `x` from the level. The arrays stay usable: a mapped file lives on
        until it is unmapped, so the image can still seed the next level or be written out,
        and its disk space comes back when the last reference goes. A gigapixel pyramid would
        otherwise leave 33 B/px of every level behind."""
        if self.state_dir is None:
            return
        for name in ("image", "content", "adam_m", "adam_v"):
            (self.state_dir / f"{name}.npy").unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.state_dir.rmdir()

    def arrays(self) -> dict[str, np.ndarray]:
        """The level's state as a checkpoint's named arrays (Adam's as on the device path)."""
        return {"image": self.x, "mu": self.m, "nu": self.v, "count": np.asarray(self.t, np.int32)}

    def restore(self, arrays: dict[str, np.ndarray]) -> None:
        """Copy a checkpoint's arrays into this state a block of rows at a time: a gigapixel
        level's state is restored straight into its memory maps, with no full-size copy."""
        from .checkpoint import copy_rows
        from .errors import UserError

        if set(arrays) != {"image", "mu", "nu", "count"}:
            raise UserError("checkpoint's optimiser state is not Adam's; pass --restart")
        copy_rows(arrays["image"], self.x)
        copy_rows(arrays["mu"], self.m)
        copy_rows(arrays["nu"], self.v)
        self.t = int(arrays["count"])


def host_window(arr: np.ndarray, top: int, left: int, size: int) -> np.ndarray:
    """arr[top:top+size, left:left+size] in arr's dtype, zero outside the array."""
    out = np.zeros((size, size, arr.shape[2]), arr.dtype)
    h, w = arr.shape[:2]
    y0, y1 = max(top, 0), min(top + size, h)
    x0, x1 = max(left, 0), min(left + size, w)
    if y1 > y0 and x1 > x0:
        out[y0 - top : y1 - top, x0 - left : x1 - left] = arr[y0:y1, x0:x1]
    return out


def _device_masks(padded: dict | None) -> dict | None:
    """The padded mask pyramids as a jit argument (their style count is static)."""
    return None if padded is None else {k: v for k, v in padded.items() if k != "n_styles"}


@partial(jax.jit, static_argnums=(1, 2))
def _gram_batch(params, spec: LossSpec, grid: TileGrid, wins, origins, live, padded):
    return batch_grams(params, spec, grid, wins, window_masks(grid, origins, live), padded, origins)


@partial(jax.jit, static_argnums=(1, 2), static_argnames=("grams",))
def _grad_batch(
    params, spec, grid, wins, content_wins, origins, live, cot, padded, mrf_t, grams=False
):
    """Tile gradients of the device path's surrogate (`objective.tile_surrogate`) for a batch,
    and with `grams` (lagged mode) the batch's Grams last.

    `content_wins` are the 8-bit content windows; they become floats here, on the device, and
    give the batch's content targets."""
    masks = window_masks(grid, origins, live)
    content_wins = content_wins.astype(jnp.float32) / 255.0
    counts = layer_counts(spec, grid.height, grid.width)
    names = tuple(n for n, _ in spec.content_layers)
    content_feats = features(params, spec, content_wins, names, masks)
    content = {n: tile_core(grid, content_feats[n], layer_level(n)) for n in names}
    surrogate = partial(tile_surrogate, params, spec, grid, counts, cot, padded, mrf_t, grams=grams)
    g, aux = jax.grad(surrogate, has_aux=True)(wins, masks, content, origins)
    (c, tv, mrf), batch_grams = aux if grams else (aux, {})
    return g, c, tv, mrf, batch_grams


@partial(jax.jit, static_argnums=(0, 1, 2))
def _style_terms(spec: LossSpec, height: int, width: int, grams, style_t):
    """The style term and its cotangents from the whole-image Gram sums, in one dispatch: op
    by op, they would wait for pass 1's last batches and hold back pass 2's first."""
    counts = layer_counts(spec, height, width)
    return style_value(spec, grams, style_t, counts), style_cotangents(spec, grams, style_t, counts)


class _Gather:
    """Gathers batches of tile windows out of host arrays into a few reused, aligned buffers:
    one copy per window pixel (no per-window zeroed array, no stack), and the device takes the
    buffer as it is (`aligned_zeros`). A buffer is reused `depth` batches later, by when the
    device has finished with it (the caller waits for that batch's results first)."""

    def __init__(self, grid: TileGrid, arrays: tuple[np.ndarray, ...], batch: int, depth: int):
        self.grid, self.arrays = grid, arrays
        size = grid.window
        self.buffers = [
            tuple(aligned_zeros((batch, size, size, a.shape[2]), a.dtype) for a in arrays)
            for _ in range(depth)
        ]
        self.turn = 0

    def __call__(self, origins: np.ndarray) -> tuple[jax.Array, ...]:
        bufs = self.buffers[self.turn % len(self.buffers)]
        self.turn += 1
        h, size = self.grid.halo, self.grid.window
        height, width = self.arrays[0].shape[:2]
        for k, (oy, ox) in enumerate(origins):
            top, left = int(oy) - h, int(ox) - h
            y0, y1 = max(top, 0), min(top + size, height)
            x0, x1 = max(left, 0), min(left + size, width)
            inside = y0 == top and x0 == left and y1 - y0 == size and x1 - x0 == size
            for arr, buf in zip(self.arrays, bufs, strict=True):
                if not inside:
                    buf[k].fill(0)
                buf[k, y0 - top : y1 - top, x0 - left : x1 - left] = arr[y0:y1, x0:x1]
        return tuple(jax.device_put(b) for b in bufs)


def _batches(indices: np.ndarray, batch: int):
    """(indices, indices padded to `batch` by repeating the last, live flags)."""
    for start in range(0, len(indices), batch):
        idx = indices[start : start + batch]
        live = np.ones(batch, np.float32)
        live[len(idx) :] = 0
        yield idx, np.concatenate([idx, np.repeat(idx[-1:], batch - len(idx))]), live


def host_grams(
    params,
    spec: LossSpec,
    grid: TileGrid,
    batch: int,
    image: np.ndarray,
    on_tile: Callable[[str, int, int], None] | None = None,
    padded: dict | None = None,
    times: StepTimes | None = None,
) -> dict[str, jax.Array]:
    """Σ f fᵀ of each style layer over a host-resident image, one batch of windows at a time
    (with `padded` masks, `objective.padded_masks`: Σ m_s f fᵀ per style)."""
    names = tuple(n for n, _ in spec.style_layers)
    if not names:  # MRF alone: no Gram term
        return {}
    t = times or StepTimes()
    origins = grid.origins()
    styles = None if padded is None else padded["n_styles"]
    grams = zeros_grams(spec, names, styles)
    masks = _device_masks(padded)
    gather = _Gather(grid, (image,), batch, PIPELINE_DEPTH)
    in_flight: list[dict] = []  # the batches whose windows are still in a gather buffer
    done = 0
    for idx, pad, live in _batches(np.arange(len(origins)), batch):
        if len(in_flight) == PIPELINE_DEPTH:  # its buffer is next: the device must be done
            with t.part("device"):
                jax.block_until_ready(in_flight.pop(0))
        with t.part("gather"):
            (wins,) = gather(origins[pad])
        with t.part("dispatch"):
            part = _gram_batch(params, spec, grid, wins, origins[pad], live, masks)
            grams = {k: grams[k] + part[k] for k in grams}
        in_flight.append(part)
        done += len(idx)
        if on_tile:
            on_tile("pass 1", done, len(origins))
    del gather, in_flight
    with t.part("trim"):  # before the level's state is allocated (styles' Grams come first)
        trim_heap()
    return grams


@functools.lru_cache(maxsize=8)
def _adam_band(lr: float, warmup: int):
    """The on-device Adam update (`make_optimizer`), applied to a band of rows and projected to
    [0, 1]: the same arithmetic, run on the CPU backend next to the host arrays."""
    opt = make_optimizer("adam", lr, warmup)

    def update(x, m, v, g, count):
        adam = optax.ScaleByAdamState(count=count, mu=m, nu=v)
        lr_state = optax.ScaleByScheduleState(count=count) if warmup > 0 else optax.EmptyState()
        updates, (adam, _) = opt.update(g, (adam, lr_state), x)
        return jnp.clip(optax.apply_updates(x, updates), 0.0, 1.0), adam.mu, adam.nu

    return jax.jit(update)


class BandAdam:
    """Adam on bands of rows whose gradient is final, run by the CPU backend (`_adam_band`)
    while the device goes on with later tiles: a band's update is launched when it is handed
    on and written into the host arrays, chunk by chunk, once `ADAM_IN_FLIGHT` later chunks are
    launched (or at the next band, or `finish`), so the host rarely waits for it. The rows,
    moments and gradient reach it uncopied (aligned arrays, `aligned_zeros`); the gradient band
    must stay unchanged until the next call returns. It goes a fixed-size chunk of rows at a
    time, so that its temporaries stay small at any image width (a last, shorter chunk is
    compiled at its own height)."""

    def __init__(self, state: HostState, lr: float, warmup: int = 0) -> None:
        self.state = state
        self.update = _adam_band(float(lr), int(warmup))
        self.count = np.asarray(state.t - 1, np.int32)  # optax counts the steps before this
        self.chunk = max(1, ROW_CHUNK_PIXELS // state.x.shape[1])
        self.cpu = jax.devices("cpu")[0]
        self.pending: list[tuple[slice, tuple[jax.Array, ...]]] = []

    def __call__(self, rows: slice, grad: np.ndarray) -> None:
        self.finish()
        st = self.state
        for r in range(rows.start, rows.stop, self.chunk):
            part = slice(r, min(r + self.chunk, rows.stop))
            g = grad[r - rows.start : part.stop - rows.start]
            args = jax.device_put((st.x[part], st.m[part], st.v[part], g, self.count), self.cpu)
            self.pending.append((part, self.update(*args)))
            if len(self.pending) > ADAM_IN_FLIGHT:
                self._write(*self.pending.pop(0))

    def finish(self) -> None:
        """Write the launched updates into the host arrays (waiting for them if need be)."""
        for item in self.pending:
            self._write(*item)
        self.pending = []

    def _write(self, part: slice, result: tuple[jax.Array, ...]) -> None:
        st, (x, m, v) = self.state, result
        st.x[part], st.m[part], st.v[part] = np.asarray(x), np.asarray(m), np.asarray(v)


def _adam_rows(state: HostState, rows: slice, grad: np.ndarray, lr: float, warmup: int = 0) -> None:
    """Adam on the rows whose gradient is final, in place in the host arrays (`BandAdam`, at
    once)."""
    adam = BandAdam(state, lr, warmup)
    adam(rows, grad)
    adam.finish()


def host_gradient(
    params,
    spec: LossSpec,
    grid: TileGrid,
    batch: int,
    targets: dict,
    x: np.ndarray,
    content: np.ndarray,
    on_rows: Callable[[slice, np.ndarray], None],
    on_tile: Callable[[str, int, int], None] | None = None,
    times: StepTimes | None = None,
    lagged: dict | None = None,
) -> tuple[float, dict[str, float], dict]:
    """The whole-image objective's gradient at host image `x`, handed to `on_rows(rows, grad)`
    band by band as soon as those rows' gradient is final. `on_rows` may update `x[rows]` in
    place: later windows never read those rows again. `times` collects where the wall time
    goes (`StepTimes`).

    `lagged` (`--gram lagged`): an earlier image's whole-image Grams stand in for pass 1's
    (`objective.tiled_value_and_grad`), and pass 2 sums this image's.

    Returns the loss (at `x` before any update), its terms and the Grams of `x`."""
    t = times or StepTimes()
    origins = grid.origins()
    n = len(origins)
    h, size = grid.halo, grid.window
    style_t = style_args(spec, targets, grid.height, grid.width)
    padded = padded_masks(spec, grid, style_t)
    mrf_t = targets.get("mrf")

    one_pass = lagged is not None
    style_dev = None  # this image's style term, once its Grams are summed
    if one_pass:  # pass 2 sums this image's Grams
        cot = _style_terms(spec, grid.height, grid.width, lagged, style_t)[1] if lagged else {}
        styles = None if padded is None else padded["n_styles"]
        grams = zeros_grams(spec, tuple(lagged), styles)
    else:  # pass 1
        grams = host_grams(params, spec, grid, batch, x, on_tile, padded, t)
        # Left on the device: pass 2 starts while the last Gram batches still run.
        if grams:
            style_dev, cot = _style_terms(spec, grid.height, grid.width, grams, style_t)
        else:
            cot = {}
    masks = _device_masks(padded)

    width = grid.width
    # Two bands taking turns: the one handed on stays unchanged until the next hand-on (an
    # asynchronous Adam may still read it), while the next tile row adds into the other.
    bands = [aligned_zeros((grid.tile + 2 * h, width, 3), np.float32) for _ in range(2)]
    band = bands[0]
    band_top = -h  # image row of band[0]
    scalars = []  # per batch (content, tv, mrf), read once at the end
    finished = 0  # rows above this have been handed on
    processed = 0
    gather = _Gather(grid, (x, content), batch, PIPELINE_DEPTH)
    work = [
        (row, *b)
        for row in range(grid.ny)
        for b in _batches(np.arange(row * grid.nx, (row + 1) * grid.nx), batch)
    ]

    def launch(j: int) -> tuple:
        _, _, pad, live = work[j]
        with t.part("gather"):
            wins, content_wins = gather(origins[pad])
        with t.part("dispatch"):
            return _grad_batch(
                params,
                spec,
                grid,
                wins,
                content_wins,
                origins[pad],
                live,
                cot,
                masks,
                mrf_t,
                grams=one_pass,
            )

    pending = launch(0)
    for j, (row, idx, _, _) in enumerate(work):
        # The next batch goes to the device before this one's gradient is read: the device is
        # never idle while the host adds tile gradients into the band and updates rows.
        following = launch(j + 1) if j + 1 < len(work) else None
        g, c, tv, mrf, part = pending
        scalars.append((c, tv, mrf))
        if one_pass:
            grams = {k: grams[k] + part[k] for k in grams}
        with t.part("device"):
            g = np.asarray(g)
        with t.part("band"):
            for k, tile in enumerate(idx):
                left = origins[tile][1] - h
                x0, x1 = max(left, 0), min(left + size, width)
                band[:, x0:x1] += g[k, :, x0 - left : x1 - left]
        pending = following
        processed += len(idx)
        if on_tile:
            on_tile("pass 2", processed, n)
        if following is not None and work[j + 1][0] == row:
            continue
        # Rows above the next tile row's windows are final: hand them on, then slide the band.
        last = row == grid.ny - 1
        upto = grid.height if last else min((row + 1) * grid.tile - h, grid.height)
        if upto > finished:
            with t.part("adam"):
                on_rows(slice(finished, upto), band[finished - band_top : upto - band_top])
            finished = upto
            with t.part("trim"):  # once per tile row: the windows' and XLA's freed buffers
                trim_heap()
        if not last:
            with t.part("band"):
                shift = grid.tile
                nxt = bands[1] if band is bands[0] else bands[0]
                nxt[:-shift] = band[shift:]
                nxt[-shift:] = 0
                band = nxt
            band_top += shift
    with t.part("device"):
        if one_pass and grams:
            style_dev = _style_terms(spec, grid.height, grid.width, grams, style_t)[0]
        style = float(style_dev) if style_dev is not None else 0.0
        sums = jax.device_get(scalars)
    content_sum = tv_sum = mrf_sum = 0.0
    for c, tv, mrf in sums:  # in batch order, in Python floats: the same sums as ever
        content_sum += float(c)
        tv_sum += float(tv)
        mrf_sum += float(mrf)
    with t.part("trim"):
        trim_heap()
    terms = {"content": content_sum, "style": style, "tv": tv_sum}
    if spec.mrf_layers:
        terms["mrf"] = mrf_sum
    return sum(terms.values()), terms, grams


def host_adam_step(
    params,
    spec: LossSpec,
    grid: TileGrid,
    batch: int,
    targets: dict,
    state: HostState,
    lr: float,
    warmup: int = 0,
    on_tile: Callable[[str, int, int], None] | None = None,
    times: StepTimes | None = None,
    lagged: dict | None = None,
) -> tuple[float, dict[str, float], dict]:
    """One Adam step of the whole-image objective with host-resident state, each band of
    rows updated as soon as its gradient is final: exact, or one-pass from `lagged` Grams
    (`host_gradient`). Returns the loss before the step, its terms and the Grams there;
    `times` gets the step's wall time by part (`StepTimes`)."""
    t = times or StepTimes()
    t0 = time.perf_counter()
    state.t += 1
    adam = BandAdam(state, lr, warmup)
    result = host_gradient(
        params,
        spec,
        grid,
        batch,
        targets,
        state.x,
        state.content,
        adam,
        on_tile,
        t,
        lagged,
    )
    with t.part("adam"):
        adam.finish()
    t.add("total", time.perf_counter() - t0)
    return result
