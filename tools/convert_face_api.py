"""Convert face-api's TF.js weights into the compact archives the Age-cGAN chapter ships (dev-time only).

    python tools/convert_face_api.py SRC_DIR chapters/age_cgan/weights --overwrite
    python tools/convert_face_api.py SRC_DIR chapters/age_cgan/weights --overwrite \\
        --fixture tests/fixtures/face_api_reference.npz --node-modules /tmp/faceapi-node/node_modules

SRC_DIR holds `face_recognition_model.bin` / `age_gender_model.bin` and their `-weights_manifest.json`
(from the npm package @vladmandic/face-api 1.7.15). Quantised tensors stay quantised, exactly as in the
`.bin` (uint8 codes + the manifest's float64 scale and min), so the archives are as small as the originals;
`chapters.age_cgan.face_nets.load_face_api_weights` de-quantises them the way tfjs does.
`--fixture` also runs the ORIGINAL networks under Node (tools/face_api_reference.js) on deterministic
inputs and stores inputs + outputs as the test fixture. Existing archives (and an existing --fixture file) are
replaced only with --overwrite, as when regenerating the shipped ones.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

NETS = {"face_recognition_model": "face_recognition.npz", "age_gender_model": "age_gender.npz"}
SOURCE = "@vladmandic/face-api 1.7.15 (MIT), model/{}.bin"
_DTYPES = {"float32": "<f4", "int32": "<i4", "uint8": "u1", "uint16": "<u2"}


def sanitise(name: str) -> str:
    """tfjs tensor name -> npz key / Keras layer-name part (`/` is not allowed in Keras names)."""
    return name.replace("/", ".")


def read_tfjs(src: Path, model: str) -> dict[str, np.ndarray]:
    """Read one TF.js weights file into npz entries, keeping uint8/uint16 quantisation as stored."""
    manifest = json.loads((src / f"{model}-weights_manifest.json").read_text())
    entries: dict[str, np.ndarray] = {"__source__": np.array(SOURCE.format(model))}
    for group in manifest:
        buf = b"".join((src / p).read_bytes() for p in group["paths"])
        offset = 0
        for spec in group["weights"]:
            key, shape, quant = sanitise(spec["name"]), spec["shape"], spec.get("quantization")
            dtype = np.dtype(_DTYPES[quant["dtype"] if quant else spec["dtype"]])
            count = int(np.prod(shape, dtype=np.int64))
            values = np.frombuffer(buf, dtype, count, offset).reshape(shape)
            offset += count * dtype.itemsize
            if quant:
                entries[key + ".q"] = values.copy()
                entries[key + ".qscale"] = np.float64(quant["scale"])
                entries[key + ".qmin"] = np.float64(quant["min"])
            else:
                entries[key] = values.astype(np.float32)
        if offset != len(buf):
            sys.exit(f"{model}: manifest describes {offset} bytes but the .bin files hold {len(buf)}")
    return entries


def reference_inputs() -> dict[str, np.ndarray]:
    """Deterministic uint8 inputs: 6 noise images, 2 astronaut face crops, 1 camera face crop per size."""
    from PIL import Image
    from skimage import data

    rng = np.random.default_rng(20240601)
    astro, camera = data.astronaut(), np.repeat(data.camera()[..., None], 3, axis=-1)
    # Tight face boxes (dlib-style): the astronaut, the same face shifted, the cameraman.
    crops = [astro[75:186, 166:277], astro[81:192, 160:271], camera[128:198, 190:260]]

    def batch(size: int) -> np.ndarray:
        noise = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(6)]
        photos = [np.asarray(Image.fromarray(c).resize((size, size), Image.BILINEAR)) for c in crops]
        return np.stack(noise + photos)

    # The 64x64 inputs exercise the in-graph resize against the original's own resizeBilinear.
    return {"fr_inputs": batch(150), "age_inputs": batch(112), "small_inputs": batch(64)[[0, 6, 8]]}


def make_fixture(src: Path, node_modules: Path, out: Path) -> None:
    """Run tools/face_api_reference.js on reference_inputs() and save inputs + outputs as one npz."""
    inputs = reference_inputs()
    with tempfile.TemporaryDirectory() as tmp:
        for name, arr in inputs.items():
            np.save(Path(tmp) / f"{name}.npy", arr)
        script = Path(__file__).with_name("face_api_reference.js")
        env = {"NODE_PATH": str(node_modules), "PATH": "/usr/bin:/bin:/usr/local/bin"}
        subprocess.run(["node", str(script), str(src), tmp], check=True, env=env)
        outputs = {p.stem: np.load(p) for p in Path(tmp).glob("*_out_*.npy")}
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **inputs, **{k: v.astype(np.float32) for k, v in outputs.items()})
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB): {sorted(outputs)}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python tools/convert_face_api.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", type=Path, metavar="SRC_DIR",
                    help="folder with the face-api .bin and -weights_manifest.json files")
    ap.add_argument("out", type=Path, metavar="OUT_DIR",
                    help="folder to write face_recognition.npz and age_gender.npz into")
    ap.add_argument("--fixture", type=Path, metavar="FILE", help="also write the reference fixture npz here")
    ap.add_argument("--node-modules", type=Path, metavar="DIR",
                    help="node_modules with face-api 1.7.15 + tfjs 4.22 (needed by --fixture)")
    ap.add_argument("--overwrite", action="store_true",
                    help="replace archives (and the --fixture file) that already exist")
    args = ap.parse_args(argv)
    if args.fixture and not args.node_modules:
        ap.error("--fixture needs --node-modules (see tools/face_api_reference.js)")
    missing = [m for m in NETS if not (args.src / f"{m}-weights_manifest.json").is_file()]
    if missing:
        ap.error(f"{args.src} has no {missing[0]}-weights_manifest.json; SRC_DIR must hold the face-api model files")
    if args.out.exists() and not args.out.is_dir():
        ap.error(f"{args.out} is a file; OUT_DIR must be a folder")
    targets = [args.out / filename for filename in NETS.values()] + ([args.fixture] if args.fixture else [])
    existing = [str(t) for t in targets if t.exists()]
    if existing and not args.overwrite:
        print(f"error: {', '.join(existing)} already there; pass --overwrite to replace", file=sys.stderr)
        raise SystemExit(2)
    args.out.mkdir(parents=True, exist_ok=True)
    for model, filename in NETS.items():
        entries = read_tfjs(args.src, model)
        np.savez_compressed(args.out / filename, **entries)
        size = (args.out / filename).stat().st_size
        print(f"wrote {args.out / filename}: {len(entries) - 1} arrays, {size / 1e6:.2f} MB")
    if args.fixture:
        make_fixture(args.src, args.node_modules, args.fixture)


if __name__ == "__main__":
    main()
