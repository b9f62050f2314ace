// Runs an ONNX model in ONNX Runtime (npm onnxruntime-node, CPU): input.npy (float32, batch
// first) -> output.npy (float32), the model's first output. Used by check_onnx.py.
//   usage: node ort_run.js MODEL.onnx INPUT.npy OUTPUT.npy   (NODE_PATH: build/tools/node_modules)
const fs = require('fs');
const ort = require('onnxruntime-node');

function readNpy(path) {  // .npy v1/v2, '<f4', C order
  const b = fs.readFileSync(path);
  const v = b[6];
  const hlen = v === 1 ? b.readUInt16LE(8) : b.readUInt32LE(8);
  const off = v === 1 ? 10 : 12;
  const header = b.toString('latin1', off, off + hlen);
  if (!header.includes("'<f4'") || header.includes("'fortran_order': True")) throw new Error(`${path}: not float32 C order`);
  const shape = header.match(/\(([^)]*)\)/)[1].split(',').filter(s => s.trim()).map(Number);
  const data = new Float32Array(b.buffer.slice(b.byteOffset + off + hlen, b.byteOffset + b.length));
  return { shape, data };
}

function writeNpy(path, shape, data) {
  let h = `{'descr': '<f4', 'fortran_order': False, 'shape': (${shape.join(', ')}${shape.length === 1 ? ',' : ''}), }`;
  h += ' '.repeat(63 - ((10 + h.length) % 64)) + '\n';
  const head = Buffer.alloc(10);
  head.write('\x93NUMPY', 0, 'latin1');
  head[6] = 1; head[7] = 0;
  head.writeUInt16LE(h.length, 8);
  fs.writeFileSync(path, Buffer.concat([head, Buffer.from(h, 'latin1'), Buffer.from(data.buffer, data.byteOffset, data.byteLength)]));
}

(async () => {
  const [model, input, output] = process.argv.slice(2);
  const x = readNpy(input);
  // One thread, no graph rewrites beyond the basic ones: the runtime's own kernels, as deployed.
  const session = await ort.InferenceSession.create(model, { intraOpNumThreads: 1 });
  const feeds = { [session.inputNames[0]]: new ort.Tensor('float32', x.data, x.shape) };
  const result = await session.run(feeds);
  const y = result[session.outputNames[0]];
  writeNpy(output, y.dims, y.data);
})().catch(e => { console.error(`ort_run.js: ${e.message}`); process.exit(1); });
