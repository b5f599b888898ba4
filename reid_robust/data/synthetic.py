"""Deterministic synthetic identity datasets written in the official Market-1501 and CUB-200-2011 layouts.

The images are drawn with numpy and PIL from a seed, so the same seed always gives byte-identical files, and
nothing is downloaded. The generated trees go through the same loaders as the real datasets.

Market layout (``layout="market"``): person-like figures whose *identity* is carried by the combination of
clothing colours (drawn from a small shared palette, so several identities wear the same colours), clothing
texture (plain, stripes, checks, dots), sleeve length, trousers/shorts/skirt, bag, hat, logo and body
proportions. The *camera* is carried by illumination (brightness, colour cast), background, scale, position,
blur and sensor noise. Every image also gets its own nuisances (walking pose, front/back view, jitter, small
occlusions). Test identities appear in ``query/`` (at most one image per identity and camera) and in
``bounding_box_test/`` (several cameras), next to distractors (pid ``0000``) and junk boxes (pid ``-1``).

CUB layout (``layout="cub"``): bird-like figures, one class per combination of plumage colours, patterns and
shape, on random sky/foliage backgrounds; classes ``1..N/2`` are the training classes and the rest the test
classes (the zero-shot metric-learning split).

A marker file (``SYNTHETIC.json``) with the generation parameters is written last; a call whose parameters
match a complete tree returns at once, a call with other parameters regenerates the tree.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from reid_robust.atomic import atomic_write_text

__all__ = ["MARKER_NAME", "PALETTE", "generate_synthetic"]

MARKER_NAME = "SYNTHETIC.json"
_PARTIAL_NAME = "SYNTHETIC.partial"
_GENERATOR_VERSION = 1
_JPEG_QUALITY = 92

# A small shared clothing palette: many identities wear the same colours, so colour alone cannot identify them.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (190, 35, 40),
    "navy": (30, 40, 110),
    "sky": (95, 155, 215),
    "green": (40, 125, 60),
    "yellow": (225, 200, 50),
    "white": (225, 225, 220),
    "black": (30, 30, 32),
    "grey": (125, 125, 128),
    "brown": (110, 70, 40),
    "pink": (225, 130, 170),
}
_COLOURS = np.array(list(PALETTE.values()), dtype=np.float32)
_SKIN = np.array([(235, 200, 170), (200, 155, 120), (150, 105, 75), (95, 65, 45)], dtype=np.float32)
_HAIR = np.array([(25, 20, 15), (90, 60, 30), (200, 170, 100), (140, 140, 140)], dtype=np.float32)

_TEXTURES = ("plain", "hstripes", "vstripes", "checks", "dots")
_LOWER_STYLES = ("trousers", "shorts", "skirt")
_BAGS = ("none", "left", "right", "backpack")
_LOGOS = ("none", "square", "circle")

# Part labels of the figure's label map.
_BG, _SKIN_L, _HAIR_L, _UPPER, _LOWER, _SHOES, _BAG, _HAT, _LOGO, _STRAP = range(10)


@dataclass(frozen=True)
class PersonLook:
    """Identity attributes of one synthetic person (colour entries index ``PALETTE``)."""

    upper: int
    lower: int
    secondary: int
    shoes: int
    hair: int
    skin: int
    texture: str
    stripe_period: float  # texture period in units of 1% of the figure height
    long_sleeves: bool
    lower_style: str
    bag: str
    bag_colour: int
    hat: bool
    hat_colour: int
    logo: str
    logo_colour: int
    height: float  # relative body height
    build: float  # relative torso/leg width
    leg_ratio: float  # fraction of the body height taken by the legs


@dataclass(frozen=True)
class CameraLook:
    """Viewing conditions of one camera: illumination, background texture, framing, blur and noise."""

    gain: np.ndarray  # [3] per-channel gain (colour cast and brightness)
    offset: float
    background: np.ndarray  # [Hb, Wb, 3] float32 texture the image backgrounds are cropped from
    scale: float  # figure height as a fraction of the image height
    x_bias: float  # horizontal shift of the figure, as a fraction of the image width
    y_bias: float  # shift of the figure, as a fraction of the free space above/below it
    blur: float
    noise: float
    back_view_prob: float


# ----------------------------------------------------------------------------------------------------------
# Random attributes
# ----------------------------------------------------------------------------------------------------------


def _random_shape(rng: np.random.Generator) -> tuple:
    """Non-colour attributes: (texture, period, long sleeves, lower style, bag, hat, logo)."""
    return (
        _TEXTURES[rng.integers(len(_TEXTURES))],
        float(rng.uniform(5.0, 9.0)),
        bool(rng.random() < 0.5),
        _LOWER_STYLES[rng.choice(3, p=[0.55, 0.25, 0.2])],
        _BAGS[rng.choice(4, p=[0.4, 0.2, 0.2, 0.2])],
        bool(rng.random() < 0.3),
        _LOGOS[rng.choice(3, p=[0.5, 0.25, 0.25])],
    )


def _random_look(rng: np.random.Generator, scheme: tuple[int, int, int], shape: tuple) -> PersonLook:
    upper, lower, secondary = scheme
    texture, period, long_sleeves, lower_style, bag, hat, logo = shape
    n = len(_COLOURS)
    return PersonLook(
        upper=upper, lower=lower, secondary=secondary,
        shoes=int(rng.choice([6, 8, 5, 7])), hair=int(rng.integers(len(_HAIR))), skin=int(rng.integers(len(_SKIN))),
        texture=texture, stripe_period=period, long_sleeves=long_sleeves, lower_style=lower_style,
        bag=bag, bag_colour=int(rng.integers(n)), hat=hat, hat_colour=int(rng.integers(n)),
        logo=logo, logo_colour=int(rng.integers(n)),
        height=float(rng.uniform(0.88, 1.0)), build=float(rng.uniform(0.85, 1.2)),
        leg_ratio=float(rng.uniform(0.43, 0.52)),
    )


def _colour_scheme(rng: np.random.Generator) -> tuple[int, int, int]:
    n = len(_COLOURS)
    upper = int(rng.integers(n))
    lower = int(rng.integers(n))
    secondary = int((upper + rng.integers(1, n)) % n)  # texture colour differs from the base colour
    return upper, lower, secondary


def _identity_looks(rng: np.random.Generator, count: int) -> list[PersonLook]:
    """``count`` distinct identities in groups of 2-3 that share one colour scheme (upper, lower, secondary)
    and differ in texture, shapes and accessories, so that colours alone are ambiguous."""
    looks: list[PersonLook] = []
    used_schemes: set = set()
    num_schemes = len(_COLOURS) ** 2 * (len(_COLOURS) - 1)
    while len(looks) < count:
        if len(used_schemes) == num_schemes:  # thousands of identities: schemes start to repeat
            used_schemes.clear()
        scheme = _colour_scheme(rng)
        if scheme in used_schemes:
            continue
        used_schemes.add(scheme)
        group = min(int(rng.integers(2, 4)), count - len(looks))
        if count - len(looks) - group == 1:  # never leave a last identity alone with its colours
            group += 1
        shapes: list[tuple] = []
        while len(shapes) < group:
            shape = _random_shape(rng)
            # Within a group, identities must differ in at least two discrete shape attributes.
            if all(sum(a != b for a, b in zip(shape[:1] + shape[2:], s[:1] + s[2:])) >= 2 for s in shapes):
                shapes.append(shape)
        looks.extend(_random_look(rng, scheme, shape) for shape in shapes)
    order = rng.permutation(len(looks))
    return [looks[i] for i in order]


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cells: tuple[int, int]) -> np.ndarray:
    """Low-frequency noise in [0, 1] of shape [height, width] (bilinear upsampling of a coarse grid)."""
    coarse = (rng.random(cells) * 255).astype(np.uint8)
    img = Image.fromarray(coarse, mode="L").resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.float32) / 255.0


def _camera_looks(rng: np.random.Generator, num_cameras: int, height: int, width: int) -> list[CameraLook]:
    cams = []
    bh, bw = 2 * height, 4 * width
    styles = ["floor", "stripes", "gradient", "blocks"]
    for c in range(num_cameras):
        brightness = rng.uniform(0.6, 1.2)
        cast = rng.uniform(0.8, 1.2, size=3)
        base1 = rng.uniform(40, 200, size=3)
        base2 = base1 + rng.normal(0, 45, size=3)
        yy, xx = np.mgrid[0:bh, 0:bw].astype(np.float32)
        style = styles[c % len(styles)] if c < len(styles) else styles[int(rng.integers(len(styles)))]
        if style == "floor":
            horizon = rng.uniform(0.5, 0.75) * bh
            mix = (yy > horizon).astype(np.float32)
        elif style == "stripes":
            period = rng.uniform(0.15, 0.35) * width
            mix = ((xx // period) % 2).astype(np.float32) * 0.8
        elif style == "gradient":
            mix = yy / bh
        else:
            mix = (_smooth_noise(rng, bh, bw, (4, 8)) > 0.5).astype(np.float32)
        texture = _smooth_noise(rng, bh, bw, (8, 16))[..., None] * 50 - 25
        background = base1 * (1 - mix[..., None]) + base2 * mix[..., None] + texture
        cams.append(
            CameraLook(
                gain=(brightness * cast).astype(np.float32),
                offset=float(rng.uniform(-15, 15)),
                background=np.clip(background, 0, 255).astype(np.float32),
                scale=float(rng.uniform(0.78, 0.93)),
                x_bias=float(rng.uniform(-0.08, 0.08)),
                y_bias=float(rng.uniform(-0.2, 0.2)),
                blur=float(rng.uniform(0.0, 0.9)),
                noise=float(rng.uniform(2.0, 8.0)),
                back_view_prob=float(rng.uniform(0.2, 0.8)),
            )
        )
    return cams


# ----------------------------------------------------------------------------------------------------------
# Person rendering
# ----------------------------------------------------------------------------------------------------------


def _draw_person_labels(look: PersonLook, height: int, width: int, top: float, cx: float, unit: float,
                        back_view: bool, stride: float, swing: float) -> tuple[np.ndarray, tuple]:
    """Label map [height, width] uint8 of the figure and the torso origin (x0, y0) for textures."""
    canvas = Image.new("L", (width, height), _BG)
    d = ImageDraw.Draw(canvas)
    u = unit
    head_r = 0.065 * u
    shoulder_y = top + 0.15 * u
    hip_y = top + (1.0 - look.leg_ratio) * u
    foot_y = top + u
    tw = min(0.26 * u * look.build, 0.8 * width)
    leg_w = max(2, round(0.1 * u * look.build))
    arm_w = max(2, round(0.065 * u))
    left, right = cx - tw / 2, cx + tw / 2

    # Legs (walking stride), shoes.
    knee_y = hip_y + 0.5 * (foot_y - hip_y)
    legs = [((cx - tw / 4, hip_y), (cx - tw / 4 - stride, foot_y - 0.03 * u)),
            ((cx + tw / 4, hip_y), (cx + tw / 4 + stride, foot_y - 0.03 * u))]
    for (hx, hy), (fx, fy) in legs:
        if look.lower_style == "trousers":
            d.line([(hx, hy), (fx, fy)], fill=_LOWER, width=leg_w)
        else:
            d.line([(hx, hy), (fx, fy)], fill=_SKIN_L, width=leg_w)
            if look.lower_style == "shorts":
                t = 0.4
                d.line([(hx, hy), (hx + t * (fx - hx), hy + t * (fy - hy))], fill=_LOWER, width=leg_w + 1)
        d.rectangle([fx - leg_w / 2 - 1, fy - 0.01 * u, fx + leg_w / 2 + 1, foot_y], fill=_SHOES)
    if look.lower_style == "skirt":
        d.polygon([(left + 1, hip_y - 1), (right - 1, hip_y - 1), (right + 0.06 * u, knee_y),
                   (left - 0.06 * u, knee_y)], fill=_LOWER)

    # Arms (swinging), sleeves.
    hand_y = hip_y + 0.06 * u
    for sx, direction in ((left - arm_w / 2, -1), (right + arm_w / 2, 1)):
        hx = sx + direction * 0.02 * u + swing * direction
        d.line([(sx, shoulder_y + 0.02 * u), (hx, hand_y)], fill=_SKIN_L, width=arm_w)
        t = 0.85 if look.long_sleeves else 0.35
        d.line([(sx, shoulder_y + 0.02 * u), (sx + t * (hx - sx), shoulder_y + 0.02 * u + t * (hand_y - shoulder_y))],
               fill=_UPPER, width=arm_w + 1)

    # Torso, neck, head, hair, hat.
    d.rectangle([left, shoulder_y, right, hip_y], fill=_UPPER)
    d.rectangle([cx - 0.03 * u, shoulder_y - 0.03 * u, cx + 0.03 * u, shoulder_y], fill=_SKIN_L)
    head_cy = top + 0.02 * u + head_r
    head_box = [cx - head_r * 0.85, head_cy - head_r, cx + head_r * 0.85, head_cy + head_r]
    d.ellipse(head_box, fill=_HAIR_L if back_view else _SKIN_L)
    if not back_view:
        d.chord(head_box, 180, 360, fill=_HAIR_L)
    if look.hat:
        d.rectangle([cx - head_r, head_cy - head_r * 1.1, cx + head_r, head_cy - head_r * 0.3], fill=_HAT)
        d.rectangle([cx - head_r * 1.4, head_cy - head_r * 0.45, cx + head_r * 1.4, head_cy - head_r * 0.25],
                    fill=_HAT)

    # Logo (front only).
    if look.logo != "none" and not back_view:
        s = 0.05 * u
        lx, ly = cx + 0.03 * u, shoulder_y + 0.08 * u
        if look.logo == "square":
            d.rectangle([lx - s, ly - s, lx + s, ly + s], fill=_LOGO)
        else:
            d.ellipse([lx - s, ly - s, lx + s, ly + s], fill=_LOGO)

    # Bags: a side bag hangs on the person's left or right, seen mirrored from the back.
    if look.bag in ("left", "right"):
        on_image_right = (look.bag == "left") != back_view
        bx = right + 0.02 * u if on_image_right else left - 0.02 * u - 0.13 * u
        d.line([(left if on_image_right else right, shoulder_y), (bx + 0.065 * u, hip_y - 0.05 * u)],
               fill=_STRAP, width=max(1, int(0.02 * u)))
        d.rectangle([bx, hip_y - 0.06 * u, bx + 0.13 * u, hip_y + 0.08 * u], fill=_BAG)
    elif look.bag == "backpack":
        if back_view:
            d.rectangle([cx - tw * 0.38, shoulder_y + 0.02 * u, cx + tw * 0.38, hip_y - 0.02 * u], fill=_BAG)
        else:
            for x in (left + tw * 0.22, right - tw * 0.22):
                d.line([(x, shoulder_y), (x, hip_y - 0.05 * u)], fill=_STRAP, width=max(1, int(0.025 * u)))
    return np.asarray(canvas, dtype=np.uint8), (left, shoulder_y)


@lru_cache(maxsize=8)
def _grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column coordinates [height, width] float32 (read-only, cached)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    yy.flags.writeable = False
    xx.flags.writeable = False
    return yy, xx


def _texture_mask(texture: str, period: float, height: int, width: int, x0: float, y0: float) -> np.ndarray:
    """Boolean [height, width] mask of the secondary colour of a clothing texture with ``period`` pixels."""
    yy, xx = _grid(height, width)
    ty = np.floor((yy - y0) / (period / 2)) % 2 == 1
    tx = np.floor((xx - x0) / (period / 2)) % 2 == 1
    if texture == "hstripes":
        return ty
    if texture == "vstripes":
        return tx
    if texture == "checks":
        return ty ^ tx
    if texture == "dots":
        return (((yy - y0) % period) < period * 0.4) & (((xx - x0) % period) < period * 0.4)
    return np.zeros((height, width), dtype=bool)


def _colourise(labels: np.ndarray, look: PersonLook, texture_mask: np.ndarray) -> np.ndarray:
    """[H, W, 3] float32 colours of the figure's parts (background pixels are left at 0)."""
    lut = np.zeros((10, 3), dtype=np.float32)
    lut[_SKIN_L] = _SKIN[look.skin]
    lut[_HAIR_L] = _HAIR[look.hair]
    lut[_UPPER] = _COLOURS[look.upper]
    lut[_LOWER] = _COLOURS[look.lower]
    lut[_SHOES] = _COLOURS[look.shoes]
    lut[_BAG] = _COLOURS[look.bag_colour]
    lut[_HAT] = _COLOURS[look.hat_colour]
    lut[_LOGO] = _COLOURS[look.logo_colour]
    lut[_STRAP] = _COLOURS[look.bag_colour] * 0.6
    rgb = lut[labels]
    rgb[(labels == _UPPER) & texture_mask] = _COLOURS[look.secondary]
    return rgb


def _finish(rgb: np.ndarray, cam: CameraLook, rng: np.random.Generator) -> Image.Image:
    """Camera illumination (per-image jitter), blur and sensor noise; returns an RGB PIL image."""
    gain = cam.gain * rng.uniform(0.9, 1.1) * rng.uniform(0.96, 1.04, size=3)
    out = rgb * gain + cam.offset
    img = Image.fromarray(np.clip(out, 0, 255).astype(np.uint8), mode="RGB")
    radius = cam.blur + rng.uniform(0.0, 0.4)
    if radius > 0.2:
        img = img.filter(ImageFilter.GaussianBlur(radius))
    noise = rng.standard_normal(size=(img.height, img.width, 3), dtype=np.float32) * np.float32(cam.noise)
    arr = np.asarray(img, dtype=np.float32) + noise
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), mode="RGB")


def _background(cam: CameraLook, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    bh, bw = cam.background.shape[:2]
    y = int(rng.integers(0, bh - height + 1))
    x = int(rng.integers(0, bw - width + 1))
    return cam.background[y:y + height, x:x + width].copy()


def _add_occlusion(rgb: np.ndarray, rng: np.random.Generator) -> None:
    """A pole, a passer-by's arm or a bin: a random-coloured rectangle over a small part of the image."""
    h, w = rgb.shape[:2]
    colour = rng.uniform(20, 235, size=3).astype(np.float32)
    kind = rng.integers(3)
    if kind == 0:  # vertical pole
        pw = int(rng.uniform(0.06, 0.14) * w) + 1
        x = int(rng.integers(0, w - pw + 1))
        rgb[:, x:x + pw] = colour
    elif kind == 1:  # object at the bottom
        oh, ow = int(rng.uniform(0.12, 0.3) * h), int(rng.uniform(0.3, 0.7) * w)
        x = int(rng.integers(0, w - ow + 1))
        rgb[h - oh:, x:x + ow] = colour
    else:  # object entering from a side
        oh, ow = int(rng.uniform(0.2, 0.4) * h), int(rng.uniform(0.15, 0.3) * w)
        y = int(rng.integers(0, h - oh + 1))
        x = 0 if rng.random() < 0.5 else w - ow
        rgb[y:y + oh, x:x + ow] = colour


def _render_person(look: PersonLook, cam: CameraLook, rng: np.random.Generator, height: int, width: int,
                   track_offset: tuple[float, float, float], junk: bool = False) -> Image.Image:
    """One bounding box of ``look`` seen by ``cam``; ``track_offset`` = (dx, dy, dscale) shared by a tracklet.
    ``junk`` frames the box badly (figure mostly outside, or tiny in a corner)."""
    dx, dy, dscale = track_offset
    unit = height * cam.scale * look.height * dscale * rng.uniform(0.96, 1.03)
    cx = width * (0.5 + cam.x_bias + dx + rng.normal(0, 0.03))
    top = (height - unit) * (0.5 + cam.y_bias + dy) + rng.normal(0, 0.02) * height
    if junk:
        if rng.random() < 0.5:  # badly cropped: most of the figure outside the box
            cx += (1 if rng.random() < 0.5 else -1) * width * rng.uniform(0.45, 0.7)
            top += (1 if rng.random() < 0.5 else -1) * height * rng.uniform(0.0, 0.4)
        else:  # a far-away person: tiny figure in a corner
            unit *= rng.uniform(0.25, 0.4)
            cx = width * rng.uniform(0.15, 0.85)
            top = height * rng.uniform(0.0, 0.7)
    back_view = bool(rng.random() < cam.back_view_prob)
    stride = unit * rng.uniform(0.0, 0.09)
    swing = unit * rng.uniform(-0.03, 0.05)
    labels, (x0, y0) = _draw_person_labels(look, height, width, top, cx, unit, back_view, stride, swing)
    tex = _texture_mask(look.texture, look.stripe_period * unit / 100.0, height, width, x0, y0)
    rgb = _background(cam, rng, height, width)
    fg = labels != _BG
    rgb[fg] = _colourise(labels, look, tex)[fg]
    if rng.random() < 0.3:
        _add_occlusion(rgb, rng)
    return _finish(rgb, cam, rng)


# ----------------------------------------------------------------------------------------------------------
# Market-1501 layout
# ----------------------------------------------------------------------------------------------------------


class _FrameClock:
    """Per-camera sequence/frame counters that give every box a unique Market-1501 file name."""

    def __init__(self, rng: np.random.Generator, num_cameras: int):
        self.rng = rng
        self.frame = {c: int(rng.integers(10, 500)) for c in range(1, num_cameras + 1)}
        self.sequence = dict.fromkeys(self.frame, 1)

    def tracklet(self, cam: int, length: int) -> list[tuple[int, int]]:
        """(sequence, frame) of ``length`` consecutive boxes in camera ``cam``; frames have 6 digits, so the
        counter starts a new sequence when it would overflow."""
        out = []
        for _ in range(length):
            step = int(self.rng.integers(5, 40))
            if self.frame[cam] + step > 999_999:
                self.sequence[cam] += 1
                self.frame[cam] = 0
            self.frame[cam] += step
            out.append((self.sequence[cam], self.frame[cam]))
        return out


def _market_name(pid: int, cam: int, seq: int, frame: int, box: int = 0) -> str:
    pid_str = "-1" if pid == -1 else f"{pid:04d}"
    return f"{pid_str}_c{cam}s{seq}_{frame:06d}_{box:02d}.jpg"


def _save(img: Image.Image, path: Path) -> None:
    img.save(path, format="JPEG", quality=_JPEG_QUALITY, subsampling=0)


def _write_market(root: Path, rng: np.random.Generator, num_identities: int, num_cameras: int, height: int,
                  width: int, train_fraction: float, num_distractors: int, num_junk: int) -> int:
    dirs = {k: root / k for k in ("bounding_box_train", "query", "bounding_box_test")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    looks = _identity_looks(rng, num_identities)
    cams = _camera_looks(rng, num_cameras, height, width)
    clock = _FrameClock(rng, num_cameras)
    pids = np.arange(1, num_identities + 1)
    num_train = round(num_identities * train_fraction)
    num_train = min(max(num_train, 1), num_identities - 1)
    is_train = np.zeros(num_identities, dtype=bool)
    is_train[rng.permutation(num_identities)[:num_train]] = True
    count = 0

    def track_offset() -> tuple[float, float, float]:
        return float(rng.normal(0, 0.04)), float(rng.normal(0, 0.05)), float(rng.uniform(0.93, 1.05))

    for look, pid, train in zip(looks, pids, is_train):
        k = int(rng.integers(2, num_cameras + 1))
        cam_ids = sorted(int(c) + 1 for c in rng.choice(num_cameras, size=k, replace=False))
        # Test identities: a query from most of their cameras (at least one), gallery boxes from every camera.
        query_cams = set() if train else {c for c in cam_ids if rng.random() < 0.85} or {cam_ids[0]}
        for cam in cam_ids:
            n_boxes = int(rng.integers(2, 6))
            n_query = 1 if cam in query_cams else 0
            offset = track_offset()
            for j, (seq, frame) in enumerate(clock.tracklet(cam, n_boxes + n_query)):
                img = _render_person(look, cams[cam - 1], rng, height, width, offset)
                folder = dirs["bounding_box_train"] if train else dirs["query" if j < n_query else "bounding_box_test"]
                _save(img, folder / _market_name(int(pid), cam, seq, frame))
                count += 1

    # Distractors (pid 0000): people who are not among the identities; junk (pid -1): bad boxes.
    for kind, n in (("distractor", num_distractors), ("junk", num_junk)):
        others = _identity_looks(rng, max(1, n))
        for i in range(n):
            cam = int(rng.integers(1, num_cameras + 1))
            (seq, frame), = clock.tracklet(cam, 1)
            if kind == "junk" and rng.random() < 0.25:  # pure background box
                rgb = _background(cams[cam - 1], rng, height, width)
                img = _finish(rgb, cams[cam - 1], rng)
            else:
                img = _render_person(others[i], cams[cam - 1], rng, height, width, track_offset(),
                                     junk=kind == "junk")
            other_pid = 0 if kind == "distractor" else -1
            _save(img, dirs["bounding_box_test"] / _market_name(other_pid, cam, seq, frame, box=int(rng.integers(0, 3))))
            count += 1
    return count


# ----------------------------------------------------------------------------------------------------------
# CUB-200-2011 layout
# ----------------------------------------------------------------------------------------------------------

_BIRD_PATTERNS = ("plain", "spots", "bars")
_BIRD_WORDS = ("Crested", "Striped", "Spotted", "Plain", "Barred", "Ringed", "Long_tailed", "Short_billed")
_BIRD_KINDS = ("Finch", "Warbler", "Sparrow", "Wren", "Tern", "Jay", "Gull", "Vireo", "Tanager", "Flycatcher")


@dataclass(frozen=True)
class BirdLook:
    body: int
    wing: int
    head: int
    belly: int
    pattern: str
    crest: bool
    wing_bar: bool
    beak_length: float
    tail_length: float
    aspect: float


def _bird_looks(rng: np.random.Generator, count: int) -> list[BirdLook]:
    """``count`` distinct classes; colours come from the shared palette, so classes share colours."""
    n = len(_COLOURS)
    looks: list[BirdLook] = []
    keys: set = set()
    while len(looks) < count:
        look = BirdLook(
            body=int(rng.integers(n)), wing=int(rng.integers(n)), head=int(rng.integers(n)),
            belly=int(rng.integers(n)), pattern=_BIRD_PATTERNS[rng.integers(3)], crest=bool(rng.random() < 0.3),
            wing_bar=bool(rng.random() < 0.4), beak_length=float(rng.choice([0.12, 0.22, 0.32])),
            tail_length=float(rng.choice([0.15, 0.3, 0.45])), aspect=float(rng.choice([0.5, 0.65, 0.8])),
        )
        key = (look.body, look.wing, look.head, look.pattern, look.crest, look.beak_length, look.tail_length)
        if key not in keys:
            keys.add(key)
            looks.append(look)
    return looks


def _render_bird(look: BirdLook, rng: np.random.Generator, height: int, width: int) -> tuple[Image.Image, tuple]:
    """One image of a bird of class ``look``; returns the image and its (x, y, w, h) bounding box."""
    size = min(height, width) * rng.uniform(0.45, 0.7)
    cx = width * rng.uniform(0.35, 0.65)
    cy = height * rng.uniform(0.35, 0.65)
    canvas = Image.new("L", (width, height), 0)
    d = ImageDraw.Draw(canvas)
    bw, bh = size * 0.6, size * 0.6 * look.aspect
    # Tail, body, belly, wing, head, beak, crest, eye (labels 1..9).
    d.polygon([(cx - bw * 0.8, cy), (cx - bw * 0.8 - look.tail_length * size, cy - 0.1 * size),
               (cx - bw * 0.8 - look.tail_length * size, cy + 0.12 * size)], fill=6)
    d.ellipse([cx - bw, cy - bh, cx + bw, cy + bh], fill=1)
    d.chord([cx - bw, cy - bh, cx + bw, cy + bh], 20, 160, fill=4)
    d.ellipse([cx - bw * 0.7, cy - bh * 0.6, cx + bw * 0.35, cy + bh * 0.35], fill=2)
    if look.wing_bar:
        d.line([(cx - bw * 0.5, cy - bh * 0.1), (cx + bw * 0.2, cy - bh * 0.1)], fill=8, width=max(1, int(size * 0.05)))
    hr = size * 0.2
    hx, hy = cx + bw * 0.85, cy - bh * 0.8
    d.ellipse([hx - hr, hy - hr, hx + hr, hy + hr], fill=3)
    d.polygon([(hx + hr * 0.8, hy - hr * 0.2), (hx + hr * 0.8 + look.beak_length * size, hy + hr * 0.1),
               (hx + hr * 0.8, hy + hr * 0.35)], fill=5)
    if look.crest:
        d.polygon([(hx - hr * 0.5, hy - hr * 0.7), (hx - hr * 1.4, hy - hr * 1.8), (hx + hr * 0.2, hy - hr * 0.9)],
                  fill=3)
    d.ellipse([hx + hr * 0.2, hy - hr * 0.35, hx + hr * 0.5, hy - hr * 0.05], fill=7)
    canvas = canvas.rotate(float(rng.uniform(-20, 20)), resample=Image.Resampling.NEAREST, center=(cx, cy))
    if rng.random() < 0.5:
        canvas = canvas.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    labels = np.asarray(canvas, dtype=np.uint8)

    yy, xx = _grid(height, width)
    period = max(3.0, size * 0.12)
    if look.pattern == "spots":
        pattern = ((yy % period) < period * 0.4) & ((xx % period) < period * 0.4)
    elif look.pattern == "bars":
        pattern = (np.floor(yy / (period / 2)) % 2) == 1
    else:
        pattern = np.zeros((height, width), dtype=bool)

    lut = np.zeros((10, 3), dtype=np.float32)
    lut[1], lut[2], lut[3] = _COLOURS[look.body], _COLOURS[look.wing], _COLOURS[look.head]
    lut[4], lut[5], lut[6] = _COLOURS[look.belly], (70, 60, 40), _COLOURS[look.wing] * 0.8
    lut[7], lut[8] = (10, 10, 10), (235, 235, 230)
    rgb = lut[labels]
    rgb[(labels == 4) & pattern] = _COLOURS[look.body] * 0.7

    # Background: sky, foliage or ground with smooth noise; sometimes a branch and a leaf over the bird.
    base = [np.array([120, 170, 220]), np.array([60, 110, 50]), np.array([150, 130, 100])][rng.integers(3)]
    base = base + rng.normal(0, 20, size=3)
    bg: np.ndarray = base + (_smooth_noise(rng, height, width, (4, 4))[..., None] - 0.5) * 80
    bg_img = Image.fromarray(np.clip(bg, 0, 255).astype(np.uint8), mode="RGB")
    if rng.random() < 0.6:
        bd = ImageDraw.Draw(bg_img)
        y = cy + bh + rng.uniform(0, 0.1) * height
        bd.line([(0, y + rng.uniform(-5, 5)), (width, y + rng.uniform(-5, 5))], fill=(90, 60, 30),
                width=max(2, int(0.05 * height)))
    bg = np.asarray(bg_img, dtype=np.float32).copy()
    fg = labels != 0
    bg[fg] = rgb[fg]
    if rng.random() < 0.25:
        lx, ly, lr = width * rng.random(), height * rng.random(), size * rng.uniform(0.15, 0.3)
        occ = Image.new("L", (width, height), 0)
        ImageDraw.Draw(occ).ellipse([lx - lr, ly - lr * 0.6, lx + lr, ly + lr * 0.6], fill=1)
        bg[np.asarray(occ, dtype=bool)] = (40, 100 + rng.uniform(0, 60), 40)
    gain = rng.uniform(0.7, 1.2) * rng.uniform(0.9, 1.1, size=3)
    img = Image.fromarray(np.clip(bg * gain + rng.normal(0, 4, size=bg.shape), 0, 255).astype(np.uint8), mode="RGB")

    ys, xs = np.nonzero(fg)
    if len(xs) == 0:
        box = (0.0, 0.0, float(width), float(height))
    else:
        box = (float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1))
    return img, box


def _write_cub(root: Path, rng: np.random.Generator, num_classes: int, height: int, width: int,
               images_per_class: tuple[int, int]) -> int:
    looks = _bird_looks(rng, num_classes)
    images_dir = root / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    lines: dict[str, list[str]] = {"images": [], "labels": [], "classes": [], "split": [], "boxes": []}
    image_id = 0
    for class_id, look in enumerate(looks, start=1):
        words = _BIRD_WORDS[rng.integers(len(_BIRD_WORDS))], _BIRD_KINDS[rng.integers(len(_BIRD_KINDS))]
        species = f"Synthetic_{words[0]}_{words[1]}_{class_id:03d}"
        folder = f"{class_id:03d}.{species}"
        (images_dir / folder).mkdir(exist_ok=True)
        lines["classes"].append(f"{class_id} {folder}")
        n = int(rng.integers(images_per_class[0], images_per_class[1] + 1))
        for k in range(n):
            image_id += 1
            img, (x, y, w, h) = _render_bird(look, rng, height, width)
            rel = f"{folder}/{species}_{k + 1:04d}_{image_id}.jpg"
            _save(img, images_dir / rel)
            lines["images"].append(f"{image_id} {rel}")
            lines["labels"].append(f"{image_id} {class_id}")
            # Like the real file: an image-level classification split (about half of each class); the
            # metric-learning protocol ignores it and splits by class instead.
            lines["split"].append(f"{image_id} {1 if k % 2 == 0 else 0}")
            lines["boxes"].append(f"{image_id} {x:.1f} {y:.1f} {w:.1f} {h:.1f}")
    files = {"images": "images.txt", "labels": "image_class_labels.txt", "classes": "classes.txt",
             "split": "train_test_split.txt", "boxes": "bounding_boxes.txt"}
    for key, name in files.items():
        (root / name).write_text("\n".join(lines[key]) + "\n", encoding="utf-8")
    return image_id


# ----------------------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------------------

_LAYOUT_ENTRIES = {
    "market": ("bounding_box_train", "query", "bounding_box_test"),
    "cub": ("images", "images.txt", "image_class_labels.txt", "classes.txt", "train_test_split.txt",
            "bounding_boxes.txt"),
}


def _count_images(root: Path, layout: str) -> int:
    if layout == "market":
        return sum(1 for d in _LAYOUT_ENTRIES["market"] if (root / d).is_dir() for _ in (root / d).glob("*.jpg"))
    return sum(1 for _ in (root / "images").glob("*/*.jpg")) if (root / "images").is_dir() else 0


def _read_marker(root: Path) -> dict | None:
    try:
        return json.loads((root / MARKER_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"generate_synthetic: {name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def generate_synthetic(
    root: str | os.PathLike,
    layout: str = "market",
    seed: int = 0,
    num_identities: int | None = None,
    num_cameras: int = 6,
    height: int | None = None,
    width: int | None = None,
    train_fraction: float = 0.5,
    num_distractors: int | None = None,
    num_junk: int | None = None,
    images_per_class: tuple[int, int] = (10, 16),
    force: bool = False,
) -> Path:
    """Write a synthetic dataset under ``root`` in the official layout and return ``root`` as a ``Path``.

    layout: ``"market"`` (Market-1501 tree and file names) or ``"cub"`` (CUB-200-2011 tree and lists).
    num_identities: identities (market, default 100) or classes (cub, default 200; the first half are the
        training classes).
    height, width: image size (default 128x64 for market, 80x80 for cub).
    train_fraction: share of market identities that go to ``bounding_box_train`` (the rest are test ids).
    num_distractors, num_junk: market gallery boxes with pid 0000 and -1 (default 3.5x and 1.5x the
        number of identities).
    images_per_class: inclusive (min, max) images per CUB class.
    force: regenerate even when a complete tree with the same parameters exists.

    The same arguments give byte-identical files. The parameters are stored in ``root/SYNTHETIC.json``,
    written last: a complete tree with matching parameters is reused, otherwise the layout's files are
    removed and regenerated. A tree that has the layout's entries but no marker (e.g. a real dataset) is never
    touched: that raises ``FileExistsError``.
    """
    if layout not in _LAYOUT_ENTRIES:
        raise ValueError(f"generate_synthetic: layout must be 'market' or 'cub', got {layout!r}")
    default_n, default_hw = (100, (128, 64)) if layout == "market" else (200, (80, 80))
    num_identities = _check_int("num_identities", default_n if num_identities is None else num_identities, 2)
    num_cameras = _check_int("num_cameras", num_cameras, 2)
    if num_cameras > 9:
        raise ValueError(f"generate_synthetic: num_cameras must be <= 9 (one digit in Market names), got {num_cameras}")
    if layout == "market" and num_identities > 9999:
        raise ValueError(f"generate_synthetic: num_identities must be <= 9999 (4-digit pids), got {num_identities}")
    height = _check_int("height", default_hw[0] if height is None else height, 32)
    width = _check_int("width", default_hw[1] if width is None else width, 16)
    seed = _check_int("seed", seed, 0)
    if not 0.0 < float(train_fraction) < 1.0:
        raise ValueError(f"generate_synthetic: train_fraction must be in (0, 1), got {train_fraction!r}")
    num_distractors = _check_int(
        "num_distractors", round(3.5 * num_identities) if num_distractors is None else num_distractors, 0)
    num_junk = _check_int("num_junk", round(1.5 * num_identities) if num_junk is None else num_junk, 0)
    lo, hi = (int(v) for v in images_per_class)
    if not 2 <= lo <= hi:
        raise ValueError(f"generate_synthetic: images_per_class must be (min, max) with 2 <= min <= max, "
                         f"got {images_per_class!r}")

    params = {"generator_version": _GENERATOR_VERSION, "layout": layout, "seed": seed,
              "num_identities": num_identities, "height": height, "width": width}
    if layout == "market":
        params.update(num_cameras=num_cameras, train_fraction=float(train_fraction),
                      num_distractors=num_distractors, num_junk=num_junk)
    else:
        params.update(images_per_class=[lo, hi])

    root = Path(root)
    marker = _read_marker(root)
    if not force and marker is not None and marker.get("params") == params \
            and marker.get("num_images") == _count_images(root, layout):
        return root
    present = [name for name in _LAYOUT_ENTRIES[layout] if (root / name).exists()]
    if present and marker is None and not (root / _PARTIAL_NAME).exists():
        raise FileExistsError(
            f"generate_synthetic: {root} already holds {', '.join(present)} without a {MARKER_NAME} marker; "
            "refusing to overwrite what may be a real dataset (use an empty directory)")
    for name in present:  # stale or partial synthetic tree
        path = root / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    (root / MARKER_NAME).unlink(missing_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    (root / _PARTIAL_NAME).write_text(json.dumps(params), encoding="utf-8")

    rng = np.random.default_rng(seed)
    if layout == "market":
        count = _write_market(root, rng, num_identities, num_cameras, height, width, float(train_fraction),
                              num_distractors, num_junk)
    else:
        count = _write_cub(root, rng, num_identities, height, width, (lo, hi))

    atomic_write_text(root / MARKER_NAME, json.dumps({"params": params, "num_images": count}, indent=2) + "\n")
    (root / _PARTIAL_NAME).unlink(missing_ok=True)
    return root
