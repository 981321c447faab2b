"""Procedural cartoon faces with an identity and an age: the embedded default data set.

Every face is a stack of implicit shapes (signed distances over the pixel grid) composited
back to front; edges get one pixel of analytic antialiasing from the distance. An identity is a
row of attributes (`sample_identities`); `render_faces` draws any identity at any age, so the
Age-cGAN chapter can see one person grow old, the anime DCGAN chapter gets many distinct faces,
and the progressive GAN gets 64x64 detail. Pure numpy, deterministic, about 1 ms per face.
"""

from __future__ import annotations

import numpy as np

AGE_BUCKETS = ((0, 18), (19, 29), (30, 39), (40, 49), (50, 59), (60, 100))
HAIR_STYLES = ("short", "long", "bangs", "bun", "bald", "spiky", "curly", "bob")
_F = np.float32

_SKIN = np.array([[1.00, 0.87, 0.77], [0.96, 0.79, 0.66], [0.88, 0.67, 0.50],
                  [0.76, 0.55, 0.38], [0.58, 0.39, 0.26], [0.40, 0.26, 0.17]], _F)
_HAIR = np.array([[0.08, 0.07, 0.07], [0.22, 0.13, 0.08], [0.42, 0.26, 0.14], [0.55, 0.21, 0.10],
                  [0.82, 0.42, 0.16], [0.90, 0.75, 0.43], [0.94, 0.90, 0.74],
                  [0.96, 0.45, 0.70], [0.25, 0.45, 0.92], [0.56, 0.30, 0.82], [0.22, 0.70, 0.45]], _F)
_HAIR_P = np.array([16, 18, 16, 9, 7, 10, 5, 5, 5, 5, 4], _F)
_EYES = np.array([[0.40, 0.23, 0.11], [0.17, 0.10, 0.06], [0.22, 0.50, 0.88], [0.28, 0.60, 0.33],
                  [0.56, 0.45, 0.18], [0.48, 0.57, 0.66], [0.60, 0.30, 0.80]], _F)
_EYES_P = np.array([30, 22, 18, 12, 10, 6, 2], _F)
_COLOURS = ("skin", "hair_color", "eye_color", "glasses_color", "background", "background2", "shirt")


def age_to_class(ages: np.ndarray) -> np.ndarray:
    """Index into AGE_BUCKETS for ages in years (completed years count: 18.9 is still <= 18)."""
    return np.digitize(np.floor(np.asarray(ages, np.float64)), [19, 30, 40, 50, 60]).astype(np.int64)


def _hsv(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    k = (np.array([5.0, 3.0, 1.0], _F) + h[:, None] * 6) % 6
    return (v[:, None] - v[:, None] * s[:, None] * np.clip(np.minimum(k, 4 - k), 0, 1)).astype(_F)


def sample_identities(n: int, seed: int) -> dict[str, np.ndarray]:
    """Random per-face attributes (arrays with a leading axis of n) that fix who a face is."""
    r = np.random.default_rng(seed)
    u = lambda lo, hi, *shape: r.uniform(lo, hi, (n, *shape)).astype(_F)  # noqa: E731
    t = r.uniform(0, len(_SKIN) - 1, n)
    i = np.minimum(t.astype(int), len(_SKIN) - 2)
    skin = _SKIN[i] + (t - i)[:, None].astype(_F) * (_SKIN[i + 1] - _SKIN[i]) + u(-0.02, 0.02, 3)
    hair = _HAIR[r.choice(len(_HAIR), n, p=_HAIR_P / _HAIR_P.sum())] * u(0.85, 1.1, 1) + u(-0.03, 0.03, 3)
    eyes = _EYES[r.choice(len(_EYES), n, p=_EYES_P / _EYES_P.sum())] * u(0.8, 1.15, 1)
    bg_h = u(0, 1)
    bg = _hsv(bg_h, u(0.15, 0.55), u(0.62, 0.95))
    bg2 = _hsv((bg_h + u(-0.08, 0.08)) % 1, u(0.15, 0.6), u(0.45, 0.8))
    return {
        "face_w": u(0.40, 0.50), "face_h": u(0.52, 0.61), "jaw": u(0.0, 0.38), "jaw_square": u(2.0, 3.4),
        "skin": np.clip(skin, 0, 1).astype(_F),
        "hair_color": np.clip(hair, 0, 1).astype(_F),
        "hair_style": r.integers(0, len(HAIR_STYLES), n).astype(np.int64),
        "hair_volume": u(0.02, 0.09), "hair_line": u(0.45, 0.62), "hair_part": u(-1, 1),
        "hair_length": u(0.0, 1.0), "grey_rate": u(0.6, 1.0), "thin_rate": u(0.2, 1.0),
        "eye_color": np.clip(eyes, 0, 1).astype(_F),
        "eye_size": u(0.055, 0.08), "eye_spacing": u(0.36, 0.47), "eye_aspect": u(0.6, 0.95),
        "brow_thick": u(0.014, 0.03), "brow_slope": u(-0.45, 0.45), "brow_arch": u(0.0, 5.0),
        "nose_size": u(0.7, 1.3), "mouth_width": u(0.1, 0.2), "mouth_curve": u(-0.8, 5.5),
        "lip_thick": u(0.011, 0.022), "mouth_open": (r.random(n) < 0.25).astype(_F),
        "blush": u(0.0, 0.45) * (r.random(n) < 0.6), "ear_size": u(0.85, 1.15),
        "beard": np.where(r.random(n) < 0.62, 0, r.integers(1, 4, n)).astype(np.int64),
        "glasses": (r.random(n) < 0.25).astype(_F), "glasses_round": (r.random(n) < 0.5).astype(_F),
        "glasses_color": _hsv(u(0, 1), u(0, 0.7), u(0.05, 0.6)),
        "background": bg, "background2": bg2, "shirt": _hsv(u(0, 1), u(0.3, 0.85), u(0.3, 0.9)),
        "wrinkle_jitter": u(-1, 1, 6), "spots": np.concatenate([u(-0.8, 0.8, 6, 2), u(0.5, 1.0, 6, 1)], -1),
    }


def _smooth(a, lo: float, hi: float):
    t = np.clip((a - lo) / (hi - lo), 0, 1)
    return t * t * (3 - 2 * t)


def _bump(u, v):
    """Soft blob, 1 at the centre and 0 outside the unit circle in (u, v)."""
    return np.clip(1 - u * u - v * v, 0, 1) ** 2


def _ellipse(x, y, cx, cy, rx, ry):
    """Approximate signed distance to an axis-aligned ellipse (exact on the axes)."""
    u, v = (x - cx) / rx, (y - cy) / ry
    k0 = np.sqrt(u * u + v * v)
    return k0 * (k0 - 1) / (np.sqrt((u / rx) ** 2 + (v / ry) ** 2) + 1e-6)


def _curve(x, y, x0, y0, half, k, thick, slope=0.0, taper=0.6):
    """Distance to the tapered stroke y = y0 + slope*(x-x0) + k*(x-x0)^2 over |x-x0| <= half.

    Swap x and y for a mostly vertical stroke."""
    dx = x - x0
    f = y0 + dx * (slope + k * dx)
    r = np.clip(dx / half, -1, 1)
    w = thick * (1 - taper * r * r)
    return np.maximum(np.abs(y - f) / np.sqrt(1 + (slope + 2 * k * dx) ** 2) - w, np.abs(dx) - half)


def _segment(x, y, ax, ay, bx, by, thick):
    px, py, vx, vy = x - ax, y - ay, bx - ax, by - ay
    h = np.clip((px * vx + py * vy) / (vx * vx + vy * vy + 1e-9), 0, 1)
    return np.sqrt((px - h * vx) ** 2 + (py - h * vy) ** 2) - thick


def _rgb(*c: float) -> np.ndarray:
    return np.array(c, _F).reshape(1, 3, 1, 1)


class _Canvas:
    """(m, 3, size, size) colours in [0, 1] over coordinates x, y in [-1, 1], y pointing down.

    Channels come before pixels so that numpy's inner loops run along image rows;
    Shapes are evaluated only inside a box that holds that shape for every face of the chunk."""

    def __init__(self, img: np.ndarray):
        self.img, self.size = img, img.shape[-1]
        self.px = _F(2.0 / self.size)
        self.c = ((np.arange(self.size, dtype=_F) + 0.5) * self.px - 1).astype(_F)

    def _span(self, lo, hi) -> tuple[int, int]:
        a = max(0, int(np.floor((np.min(lo) + 1) / self.px)) - 1)
        return a, max(a, min(self.size, int(np.ceil((np.max(hi) + 1) / self.px)) + 1))

    def box(self, x0, x1, y0, y1):
        (r0, r1), (c0, c1) = self._span(y0, y1), self._span(x0, x1)
        return (slice(r0, r1), slice(c0, c1)), self.c[c0:c1][None, None, :], self.c[r0:r1][None, :, None]

    def cov(self, d, soft: float = 1.0):
        return np.clip(0.5 - d / (soft * self.px), 0, 1)

    def paint(self, box, colour, alpha) -> None:
        band = self.img[:, :, box[0], box[1]]
        band += alpha[:, None] * (colour - band)

    def inked(self, box, colour, d, dens=1.0) -> None:
        """Fill with a darker rim: the cartoon outline that keeps shapes legible at 64 px."""
        self.paint(box, colour * 0.55, self.cov(d) * dens)
        self.paint(box, colour, self.cov(d + 1.3 * self.px) * dens)


def _geometry(p: dict[str, np.ndarray], ages: np.ndarray) -> dict[str, np.ndarray]:
    """Per-face layout as (m, 1, 1) arrays and colours as (m, 3, 1, 1), at the given ages."""
    g = {k: (v.reshape(len(v), 1, 1) if v.ndim == 1 else v) for k, v in p.items()}
    for k in _COLOURS:
        g[k] = p[k][:, :, None, None]
    age = g["age"] = ages.astype(_F).reshape(-1, 1, 1)
    # Child proportions fade out linearly up to 19, so a face of 18 still reads younger than one of 19.
    child = g["child"] = np.clip((19 - age) / 15, 0, 1) ** 0.75
    old = g["old"] = _smooth(age, 55, 90)
    # Age marks come in stages whose ramps straddle the bucket edges (29|30, 39|40, 49|50, 59|60), so every
    # ten years adds something visible: a first forehead line and the folds around 30, a second line and
    # crow's feet around 40, a third line, bags and grey hair around 50, age spots around 60.
    g["wrinkle"] = _smooth(age, 24, 55)
    grey = _smooth(age, 41, 66) * g["grey_rate"]
    thin = g["thin"] = _smooth(age, 52, 88) * g["thin_rate"]
    g["beard_on"] = _smooth(age, 15, 21)
    skin = g["skin"]
    skin = g["skin"] = skin + (skin.mean(1, keepdims=True) + 0.06 - skin) * 0.25 * old[:, None]
    hair = g["hair"] = g["hair_color"] + (_rgb(0.86, 0.86, 0.88) - g["hair_color"]) * grey[:, None]
    g["brow"] = hair * 0.6 + g["hair_color"] * 0.25 * (1 - grey[:, None])
    g["line"] = skin * 0.6
    g["lip"] = _rgb(0.62, 0.2, 0.22) * 0.55 + skin * 0.35

    # Children: rounder, wider heads with the features low and close, big eyes, small nose and mouth.
    rx = g["rx"] = g["face_w"] * (1 + 0.08 * child) * (1 + 0.03 * old)
    ry = g["ry"] = g["face_h"] * (1 - 0.11 * child)
    cy = g["cy"] = -0.05 + 0.07 * child
    g["jaw_n"] = g["jaw"] * (1 - 0.8 * child) * (1 - 0.5 * old)
    g["square"] = np.clip((g["jaw_square"] - 2) / 1.4, 0, 1) * (1 - child)
    ey = g["ey"] = cy + ry * (0.03 + 0.2 * child)
    g["ex"] = g["eye_spacing"] * rx * (1 - 0.05 * child)
    er = g["er"] = g["eye_size"] * (1 + 0.55 * child) * (1 - 0.12 * old)
    g["ea"] = np.minimum(g["eye_aspect"] * (1 + 0.25 * child) * (1 - 0.15 * old), 0.98) * er
    g["ny"] = ey + ry * (0.36 - 0.1 * child)
    g["ns"] = g["nose_size"] * (1 - 0.45 * child) * (1 + 0.1 * old)
    g["my"] = ey + ry * (0.6 - 0.15 * child)
    g["mw"] = g["mouth_width"] * rx / 0.45 * (1 - 0.25 * child)
    g["curve"] = g["mouth_curve"] * (1 - 0.6 * old) - 1.5 * old
    g["lip_t"] = g["lip_thick"] * (1 - 0.35 * old)

    st = g["hair_style"]
    for i, name in enumerate(HAIR_STYLES):
        g[name] = (st == i).astype(_F)
    framed = g["long"] + g["bob"] + g["curly"]
    hv = g["hv"] = g["hair_volume"] + 0.08 * g["curly"]
    g["back_end"] = np.where(g["long"] > 0, cy + ry * (1.1 + 0.9 * g["hair_length"]),
                             np.where(framed > 0, cy + ry * (0.75 + 0.2 * g["hair_length"]), -5))
    g["lock_end"] = np.where(framed > 0, ey + ry * (0.35 + 0.3 * g["hair_length"]), -5)
    g["yh"] = cy - ry * (g["hair_line"] - 0.28 * g["bangs"] - 0.1 * child) - 0.38 * ry * thin
    g["yside"] = ey - 0.02 + 0.12 * framed
    g["baldness"] = g["bald"] * _smooth(age, 22, 50)
    g["fancy"] = (g["curly"] + g["spiky"]) > 0
    return g


def _back_hair(cv: _Canvas, g) -> None:
    rx, ry, cy, hv = g["rx"], g["ry"], g["cy"], g["hv"]
    hw = rx + hv + 0.04 + 0.05 * g["curly"]
    box, X, Y = cv.box(-hw, hw, cy - ry - hv, g["back_end"])
    d = np.maximum(np.abs(X) - hw, np.maximum(cy - ry * 0.2 - Y, Y - g["back_end"]))
    d = np.minimum(d, _ellipse(X, Y, 0, cy - 0.02, hw, ry + hv))
    cv.paint(box, g["hair"] * 0.5, cv.cov(d))
    cv.paint(box, g["hair"] * 0.8, cv.cov(d + 1.3 * cv.px))


def _body(cv: _Canvas, g) -> None:
    child, cy, ry = g["child"], g["cy"], g["ry"]
    box, X, Y = cv.box(-1, 1, cy + ry * 0.4, 1)
    neck_w = 0.16 * (1 - 0.25 * child) * (g["face_w"] / 0.45)
    cv.paint(box, g["skin"] * 0.82, cv.cov(np.maximum(np.abs(X) - neck_w, cy + ry * 0.4 - Y)))
    d_sh = _ellipse(X, Y, 0, 1.26, 0.92 * (1 - 0.3 * child), 0.5)
    cv.inked(box, g["shirt"], d_sh)
    collar = _curve(X, Y, 0, 0.78 - 0.02 * child, neck_w * 1.2, 3.0, 0.012, taper=0.0)
    cv.paint(box, g["shirt"] * 0.6, cv.cov(np.maximum(collar, d_sh)))


def _head_sdf(g, X, Y):
    """Ellipse whose lower half narrows into the jaw and squares off (an L2/L4 norm blend)."""
    rx, ry = g["rx"], g["ry"]
    yn = (Y - g["cy"]) / ry
    low = np.clip(yn, 0, 1)
    xn = X / (rx * (1 - g["jaw_n"] * low * low))
    x2, y2 = xn * xn, yn * yn
    k2 = np.sqrt(x2 + y2)
    k = k2 + g["square"] * low * (np.sqrt(np.sqrt(x2 * x2 + y2 * y2)) - k2)
    return (k - 1) / (np.sqrt(x2 / (rx * rx) + y2 / (ry * ry)) / (k2 + 1e-6) + 1e-6)


def _head(cv: _Canvas, g) -> None:
    rx, ry, cy, ey = g["rx"], g["ry"], g["cy"], g["ey"]
    es = g["ear_size"] * (1 + 0.1 * g["child"])
    for s in (-1, 1):
        box, X, Y = cv.box(s * rx * 0.97 - 0.09, s * rx * 0.97 + 0.09, ey - 0.09, ey + 0.17)
        d = _ellipse(X, Y, s * rx * 0.97, ey + 0.04, 0.065 * es, 0.1 * es)
        cv.inked(box, g["skin"] * 0.93, d)
        cv.paint(box, g["skin"] * 0.75, cv.cov(_curve(Y, X, ey + 0.04, s * rx * 1.0, 0.05 * es, s * 4.0, 0.008)))
    box, X, Y = cv.box(-rx, rx, cy - ry, cy + ry)
    d = _head_sdf(g, X, Y)
    shade = (0.86 + 0.14 * _smooth(-d, 0.0, 0.12))[:, None]
    cv.paint(box, g["skin"] * 0.55, cv.cov(d))
    cv.paint(box, g["skin"] * shade, cv.cov(d + 1.3 * cv.px))


def _blush(cv: _Canvas, g) -> None:
    for s in (-1, 1):
        cx, yc = s * g["ex"] * 1.05, (g["ey"] + g["ny"]) / 2 + 0.04
        box, X, Y = cv.box(cx - 0.09, cx + 0.09, yc - 0.06, yc + 0.06)
        cv.paint(box, _rgb(0.95, 0.45, 0.45), 0.6 * (g["blush"] + 0.25 * g["child"]) * _bump((X - cx) / 0.08,
                                                                                           (Y - yc) / 0.05))


def _forehead_lines(cv: _Canvas, g) -> None:
    ey, ry, er = g["ey"], g["ry"], g["er"]
    box, X, Y = cv.box(-g["rx"] * 0.5, g["rx"] * 0.5, ey - er - 0.1 - ry * 0.3, ey - er - 0.05)
    for i in range(3):
        yl = ey - er - 0.07 - ry * (0.1 + 0.09 * i) + 0.012 * g["wrinkle_jitter"][:, i, None, None]
        d = _curve(X, Y, 0.02 * g["wrinkle_jitter"][:, i + 3, None, None], yl, g["rx"] * (0.45 - 0.07 * i), 0.5, 0.013)
        cv.paint(box, g["line"] * 0.85, cv.cov(d) * _smooth(g["age"], 25 + 10 * i, 34 + 10 * i) * 0.95)


def _eye_lines(cv: _Canvas, g) -> None:
    """Crow's feet at the outer corners and bags under the eyes."""
    ex, ey, er, ea, age = g["ex"], g["ey"], g["er"], g["ea"], g["age"]
    for s in (-1, 1):
        ox = s * (ex + er + 0.02)
        box, X, Y = cv.box(ox - 0.01, ox + s * 0.08, ey - 0.05, ey + 0.05)
        d = 1.0
        for ang in (-0.5, 0.0, 0.5):
            d = np.minimum(d, _segment(X, Y, ox, ey, ox + s * 0.06 * np.cos(ang), ey + 0.06 * np.sin(ang), 0.009))
        cv.paint(box, g["line"], cv.cov(d) * _smooth(age, 35, 44) * 0.95)
        box, X, Y = cv.box(s * ex - er, s * ex + er, ey + ea, ey + ea + 0.06)
        bag = _curve(X, Y, s * ex, ey + ea + 0.028, er * 0.9, -2.0, 0.011)
        cv.paint(box, g["line"], cv.cov(bag) * _smooth(age, 45, 55) * 0.95)


def _folds(cv: _Canvas, g) -> None:
    """Nasolabial folds from beside the nose to past the mouth corners."""
    y0, y1 = g["ny"] - 0.02, g["my"] + 0.045
    for s in (-1, 1):
        x0, x1 = s * (0.06 * g["ns"] + 0.025), s * (g["mw"] + 0.03)
        box, X, Y = cv.box(np.minimum(x0, x1) - 0.03, np.maximum(x0, x1) + 0.03, y0, y1)
        d = _curve(Y, X, (y0 + y1) / 2, (x0 + x1) / 2, (y1 - y0) / 2, s * -1.5, 0.012, slope=(x1 - x0) / (y1 - y0))
        cv.paint(box, g["line"] * 0.9, cv.cov(d) * _smooth(g["age"], 25, 34) * 0.95)


def _spots(cv: _Canvas, g) -> None:
    rx, ry, cy = g["rx"], g["ry"], g["cy"]
    box, X, Y = cv.box(-rx * 0.85, rx * 0.85, cy - ry * 0.75, cy + ry * 0.25)
    a = _smooth(g["age"], 55, 64) * 0.85
    for j in range(6):
        sx, sy, sr = (g["spots"][:, j, c, None, None] for c in range(3))
        d = np.sqrt((X - sx * rx * 0.8) ** 2 + (Y - (cy - ry * 0.25 + sy * ry * 0.45)) ** 2) - 0.022 * sr
        cv.paint(box, g["skin"] * _rgb(0.72, 0.6, 0.5), cv.cov(d) * a * (j < 4 + 2 * g["old"]))


def _eyes(cv: _Canvas, g) -> None:
    ex, ey, er, ea = g["ex"], g["ey"], g["er"], g["ea"]
    for s in (-1, 1):
        cx = s * ex
        box, X, Y = cv.box(cx - er - 0.02, cx + er + 0.02, ey - ea - 0.02, ey + ea + 0.02)
        d_eye = _ellipse(X, Y, cx, ey, er, ea)
        inside = cv.cov(d_eye)
        cv.paint(box, _rgb(0.97, 0.97, 0.96), inside)
        ir = np.minimum(ea * 0.95, er * 0.62)
        icx = cx + s * 0.004
        r = np.sqrt((X - icx) ** 2 + (Y - ey) ** 2)
        cv.paint(box, g["eye_color"], cv.cov(r - ir) * inside)
        cv.paint(box, g["eye_color"] * 0.3, cv.cov(r - ir * 0.5) * inside)
        d_hl = np.sqrt((X - icx + ir * 0.35) ** 2 + (Y - ey + ir * 0.4) ** 2) - ir * 0.28
        cv.paint(box, _rgb(1.0, 1.0, 1.0), cv.cov(d_hl) * inside)
        lash = np.maximum(np.abs(d_eye) - 0.011, Y - ey + ea * 0.15)
        cv.paint(box, _rgb(0.1, 0.07, 0.07), cv.cov(lash))


def _brows(cv: _Canvas, g) -> None:
    ex, er = g["ex"], g["er"]
    by = g["ey"] - g["ea"] - 0.045 - 0.03 * g["eye_size"] / 0.07 - 0.01 * g["child"]
    for s in (-1, 1):
        box, X, Y = cv.box(s * ex - er * 1.4, s * ex + er * 1.4, by - 0.07, by + 0.07)
        d = _curve(X, Y, s * ex, by, er * 1.35, g["brow_arch"], g["brow_thick"] * (1 - 0.25 * g["child"]),
                   slope=s * g["brow_slope"] * 0.5, taper=0.5)
        cv.paint(box, g["brow"], cv.cov(d))


def _nose(cv: _Canvas, g) -> None:
    ny, ns, skin = g["ny"], g["ns"], g["skin"]
    box, X, Y = cv.box(-0.07, 0.07, ny - 0.12 * ns, ny + 0.04)
    d = _curve(X, Y, 0, ny + 0.01 * ns, 0.045 * ns, -6.0 / ns, 0.009 * np.sqrt(ns), taper=0.5)
    cv.paint(box, skin * 0.55, cv.cov(d))
    d = _segment(X, Y, 0.02 * ns, ny - 0.09 * ns, 0.035 * ns, ny - 0.015, 0.006 * ns)
    cv.paint(box, skin * 0.7, cv.cov(d) * (1 - 0.6 * g["child"]))


def _mouth(cv: _Canvas, g) -> None:
    """A lip stroke, or an open smile with teeth for some identities; corners droop with age."""
    my, mw, curve = g["my"], g["mw"], g["curve"]
    box, X, Y = cv.box(-mw - 0.02, mw + 0.02, my - np.maximum(curve, 0) * mw * mw - 0.03, my + 0.1)
    op = g["mouth_open"] * (g["mouth_curve"] > 1.5)
    dx = X / mw
    f = my - curve * mw * mw * dx * dx
    d_open = np.maximum(np.maximum(f - Y, Y - f - 0.07 * (1 - dx * dx) * (0.7 + 0.3 * g["child"])), np.abs(X) - mw)
    cv.paint(box, _rgb(0.35, 0.07, 0.09), cv.cov(d_open) * op)
    cv.paint(box, _rgb(0.97, 0.96, 0.93), cv.cov(np.maximum(d_open, Y - f - 0.022)) * op)
    cv.paint(box, g["lip"], cv.cov(_curve(X, Y, 0, my, mw, -curve, g["lip_t"], taper=0.55)))


def _beard(cv: _Canvas, g) -> None:
    """1 moustache, 2 full beard (jaw up to the cheeks, mouth left free), 3 moustache and goatee."""
    ny, my, mw, rx, bt = g["ny"], g["my"], g["mw"], g["rx"], g["beard"]
    box, X, Y = cv.box(-rx, rx, ny - 0.12, g["cy"] + g["ry"])
    mous = _curve(X, Y, 0, (ny + my) / 2 + 0.01, mw + 0.02, -2.0, 0.017, taper=0.4)
    d_in = _head_sdf(g, X, Y)
    full = np.maximum(np.maximum(d_in, ny + 0.03 - 0.12 * (X / rx) ** 2 - Y),
                      -_ellipse(X, Y, 0, my + 0.005, mw + 0.025, 0.028))
    goat = _ellipse(X, Y, 0, my + 0.07, mw * 0.55, 0.055)
    d = np.minimum(mous, np.where(bt == 2, full, np.where(bt == 3, goat, 1.0)))
    cv.paint(box, g["hair"] * 0.85, cv.cov(np.maximum(d, d_in)) * g["beard_on"])
    lip = _curve(X, Y, 0, my, mw * 0.7, -g["curve"], g["lip_t"] * 0.9, taper=0.55)
    cv.paint(box, g["lip"], cv.cov(lip) * (bt == 2) * g["beard_on"])


def _hair(cv: _Canvas, g, fancy: bool) -> None:
    """Cap above a curved hairline plus per-style parts; spiky and curly outlines need the angle."""
    rx, ry, cy, hv = g["rx"], g["ry"], g["cy"], g["hv"]
    w = rx + hv + 0.12
    box, X, Y = cv.box(-w, w, cy - ry - hv - 0.3, np.maximum(g["lock_end"], g["yside"]) + 0.02)
    d_out = _ellipse(X, Y, 0, cy - 0.02 - 0.5 * hv, rx + hv, ry + 1.2 * hv)
    if fancy:
        ang = np.arctan2(Y - cy, X)
        tri = np.abs((ang * (11 / (2 * np.pi))) % 1.0 - 0.5) * 2
        d_out = d_out - 0.035 * g["curly"] * np.cos(ang * 16) - 0.09 * g["spiky"] * tri * np.clip(-(Y - cy) / ry, 0, 1)
    yh = g["yh"] + 0.06 * g["hair_part"] * X
    ax = np.minimum(np.abs(X) / rx, 1.2) ** 2
    hl = yh + (g["yside"] - yh) * ax * ax - 0.03 * g["bangs"] * np.abs(np.sin(X * 38))
    d = np.maximum(d_out, Y - hl)
    aX = np.abs(X)
    lock = np.maximum(np.maximum(rx * 0.8 - aX, aX - rx - hv), np.maximum(Y - g["lock_end"], cy - Y))
    bun = np.where(g["bun"] > 0, np.sqrt(X * X + (Y - (cy - ry - hv - 0.06)) ** 2) - 0.15, 1.0)
    d = np.minimum(np.minimum(d, lock), bun)
    # Age thins the crown (scalp shows through) and balds the "bald" style from the top down.
    crown = _bump(X / (rx * 0.55), (Y - (cy - ry * 0.7)) / (ry * 0.4))
    top = cv.cov(np.maximum(aX - rx * 0.62, Y - (cy - ry * 0.5)), soft=3.0)
    dens = np.clip(1 - 0.8 * g["thin"] * crown * (1 - g["bun"]) - g["baldness"] * top, 0, 1)
    shine = (1 + 0.25 * _bump((X + 0.12) / 0.13, (Y - (cy - ry * 0.8)) / 0.05))[:, None]
    cv.paint(box, g["hair"] * 0.5, cv.cov(d) * dens)
    cv.paint(box, np.minimum(g["hair"] * shine, 1), cv.cov(d + 1.3 * cv.px) * dens)


def _glasses(cv: _Canvas, g) -> None:
    ex, ey, rx = g["ex"], g["ey"], g["rx"]
    gr = g["er"] * 1.45 + 0.02
    box, X, Y = cv.box(-rx - 0.02, rx + 0.02, ey - gr - 0.03, ey + gr + 0.02)
    lens = frame = 1.0
    for s in (-1, 1):
        cx = s * ex
        d_round = np.sqrt((X - cx) ** 2 + (Y - ey) ** 2) - gr
        qx, qy = np.abs(X - cx) - gr * 1.05, np.abs(Y - ey) - gr * 0.72
        d_sq = np.sqrt(np.maximum(qx, 0) ** 2 + np.maximum(qy, 0) ** 2) + np.minimum(np.maximum(qx, qy), 0)
        d = np.where(g["glasses_round"] > 0, d_round, d_sq)
        lens = np.minimum(lens, d)
        frame = np.minimum(frame, np.abs(d) - 0.011)
        frame = np.minimum(frame, _segment(X, Y, cx + s * gr, ey - 0.01, s * (rx + 0.01), ey - 0.02, 0.009))
    frame = np.minimum(frame, _curve(X, Y, 0, ey - 0.015, ex - gr * 0.95, -4.0, 0.009, taper=0.0))
    cv.paint(box, _rgb(0.85, 0.92, 1.0), cv.cov(lens) * 0.18)
    cv.paint(box, g["glasses_color"], cv.cov(frame))


# Back to front; a mask limits a layer to the faces that show it (most marks are age-gated).
_LAYERS = (
    (_back_hair, lambda g: g["back_end"] > -4),
    (_body, None),
    (_head, None),
    (_blush, lambda g: g["blush"] + g["child"] > 0.02),
    (_forehead_lines, lambda g: g["age"] > 25),
    (_eye_lines, lambda g: g["age"] > 35),
    (_folds, lambda g: g["age"] > 25),
    (_spots, lambda g: g["age"] > 55),
    (_eyes, None), (_brows, None), (_nose, None), (_mouth, None),
    (_beard, lambda g: (g["beard"] > 0) & (g["age"] > 15)),
    (lambda cv, g: _hair(cv, g, False), lambda g: ~g["fancy"]),
    (lambda cv, g: _hair(cv, g, True), lambda g: g["fancy"]),
    (_glasses, lambda g: g["glasses"] > 0),
)


def _render_chunk(p: dict[str, np.ndarray], ages: np.ndarray, size: int) -> np.ndarray:
    g = _geometry(p, ages)
    ramp = (np.arange(size, dtype=_F) + 0.5)[:, None] / size
    img = g["background"] + (g["background2"] - g["background"]) * ramp
    cv = _Canvas(np.ascontiguousarray(np.broadcast_to(img, (len(ages), 3, size, size))))
    for draw, mask in _LAYERS:
        if mask is None:
            draw(cv, g)
            continue
        idx = np.flatnonzero(mask(g))
        if len(idx):
            sub = _Canvas(cv.img[idx])
            draw(sub, {k: v[idx] for k, v in g.items()})
            cv.img[idx] = sub.img
    return cv.img.transpose(0, 2, 3, 1)


def render_faces(identities: dict[str, np.ndarray], ages: np.ndarray, size: int = 64,
                 chunk: int = 256) -> np.ndarray:
    """Draw identity i at ages[i] (years): float32 (n, size, size, 3) in [-1, 1]."""
    ages = np.asarray(ages, _F).reshape(-1)
    out = np.empty((len(ages), size, size, 3), _F)
    for s in range(0, len(ages), chunk):
        out[s:s + chunk] = _render_chunk({k: v[s:s + chunk] for k, v in identities.items()}, ages[s:s + chunk], size)
    np.clip(out, 0, 1, out=out)
    return out * 2 - 1


def make_dataset(n: int, seed: int, size: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n random faces with ages spread evenly over AGE_BUCKETS: (images, ages in years, age class)."""
    r = np.random.default_rng([seed, 1])
    cls = r.permutation(np.arange(n) % len(AGE_BUCKETS))
    lo = np.array([4, 19, 30, 40, 50, 60], np.float64)[cls]
    hi = np.array([19, 30, 40, 50, 60, 88], np.float64)[cls]
    ages = np.floor(r.uniform(lo, hi)).astype(_F)
    return render_faces(sample_identities(n, seed), ages, size), ages, cls.astype(np.int64)
