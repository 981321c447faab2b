// Reference outputs of the ORIGINAL face-api networks, for tests/fixtures/face_api_reference.npz (dev-time only).
//
// Install the original outside the repo (no native downloads needed):
//   mkdir -p /tmp/faceapi-node && cd /tmp/faceapi-node && npm init -y &&
//   npm install @vladmandic/face-api@1.7.15 @tensorflow/tfjs@4.22.0 @tensorflow/tfjs-backend-wasm@4.22.0
// then, from the repo root (writes the inputs, runs this script, packs the fixture):
//   python tools/convert_face_api.py SRC_DIR chapters/age_cgan/weights \
//       --fixture tests/fixtures/face_api_reference.npz --node-modules /tmp/faceapi-node/node_modules
// Direct use: NODE_PATH=/tmp/faceapi-node/node_modules node tools/face_api_reference.js WEIGHTS_DIR IO_DIR
// IO_DIR holds fr_inputs.npy, age_inputs.npy, small_inputs.npy (uint8, N x H x W x 3); the outputs are
// written next to them as float32 .npy files.
'use strict';

const fs = require('fs');
const path = require('path');
const faceapi = require('@vladmandic/face-api/dist/face-api.node-wasm.js');

const { tf } = faceapi;

function readNpyUint8(file) {
  const buf = fs.readFileSync(file);
  const headerLen = buf.readUInt16LE(8);
  const header = buf.toString('latin1', 10, 10 + headerLen);
  if (!header.includes("'|u1'")) throw new Error(`${file}: expected uint8, header ${header}`);
  const shape = header.match(/'shape': \(([^)]*)\)/)[1].split(',').filter((s) => s.trim()).map(Number);
  return { data: new Uint8Array(buf.buffer, buf.byteOffset + 10 + headerLen), shape };
}

function writeNpyFloat32(file, values, shape) {
  let header = `{'descr': '<f4', 'fortran_order': False, 'shape': (${shape.join(', ')},), }`;
  header += ' '.repeat(63 - ((10 + header.length) % 64)) + '\n';
  const head = Buffer.alloc(10);
  head.write('\x93NUMPY', 0, 'latin1');
  head.writeUInt8(1, 6);
  head.writeUInt16LE(header.length, 8);
  fs.writeFileSync(file, Buffer.concat([head, Buffer.from(header, 'latin1'), Buffer.from(Float32Array.from(values).buffer)]));
}

async function loadNet(net, dir, name) {
  const manifest = JSON.parse(fs.readFileSync(path.join(dir, `${name}-weights_manifest.json`)));
  const bin = Buffer.concat(manifest[0].paths.map((p) => fs.readFileSync(path.join(dir, p))));
  const buffer = bin.buffer.slice(bin.byteOffset, bin.byteOffset + bin.byteLength);
  net.loadFromWeightMap(tf.io.decodeWeights(buffer, manifest[0].weights));
  return net;
}

// Each image goes in alone as a 3-D float tensor of 0..255 pixels, exactly as face-api's own pipeline does.
function images(batch) {
  const [n, h, w, c] = batch.shape;
  const size = h * w * c;
  return Array.from({ length: n }, (_, i) => tf.tensor3d(Float32Array.from(batch.data.subarray(i * size, (i + 1) * size)), [h, w, c], 'float32'));
}

async function main() {
  const [weightsDir, ioDir] = process.argv.slice(2);
  await tf.setBackend('cpu');
  await tf.ready();
  const fr = await loadNet(new faceapi.FaceRecognitionNet(), weightsDir, 'face_recognition_model');
  const ag = await loadNet(new faceapi.AgeGenderNet(), weightsDir, 'age_gender_model');
  for (const [inputName, tag] of [['fr_inputs', 'fr'], ['age_inputs', 'age'], ['small_inputs', 'small']]) {
    const imgs = images(readNpyUint8(path.join(ioDir, `${inputName}.npy`)));
    if (tag !== 'age') {
      const desc = [];
      const t0 = Date.now();
      for (const img of imgs) desc.push(...await fr.computeFaceDescriptor(img));
      console.log(`${tag}: ${imgs.length} descriptors, ${((Date.now() - t0) / imgs.length).toFixed(0)} ms each`);
      writeNpyFloat32(path.join(ioDir, `${tag}_out_descriptor.npy`), desc, [imgs.length, 128]);
    }
    if (tag !== 'fr') {
      const ages = [];
      const genders = [];
      for (const img of imgs) {
        const out = await ag.forward(img);
        ages.push(...out.age.dataSync());
        genders.push(...out.gender.dataSync());
        tf.dispose([out.age, out.gender]);
      }
      console.log(`${tag}: ages ${ages.map((a) => a.toFixed(1)).join(' ')}`);
      writeNpyFloat32(path.join(ioDir, `${tag}_out_age.npy`), ages, [imgs.length]);
      writeNpyFloat32(path.join(ioDir, `${tag}_out_gender.npy`), genders, [imgs.length, 2]);
    }
    tf.dispose(imgs);
  }
}

main().catch((err) => { console.error(err); process.exit(1); });
