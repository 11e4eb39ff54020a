// The entry page of `kerasae serve`: a drawing pad, sliders over the code, an interpolation
// strip and samples, each answered by the server's Keras model (kerasae/serve/server.py's JSON API).
"use strict";

const entry = document.getElementById("entry").dataset.entry;
const api = `/api/entries/${encodeURIComponent(entry)}`;
const $ = (id) => document.getElementById(id);

// What the tests and the latency benchmark read: the time from a slider's move to its image.
window.kerasae = { ready: false, decodeLatencies: [], reconstructions: 0, decodes: 0, busy: 0 };

const state = {
  info: null,
  source: null, // what the model sees now: {image: data URL} or {test: index}
  code: [],
  label: null, // the picked class of a conditional model
  a: null,
  b: null,
};

function showError(message) {
  const status = $("status");
  status.textContent = message;
  status.classList.toggle("error", Boolean(message));
}

async function post(path, body) {
  const response = await fetch(`${api}/${path}`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const answer = await response.json();
  if (!response.ok) {
    showError(answer.error || `HTTP ${response.status}`);
    throw new Error(answer.error);
  }
  showError("");
  return answer;
}

function setImage(img, url) {
  img.src = url;
  return img.decode().catch(() => {});
}

function withLabel(body) {
  return state.info.conditional ? { ...body, label: state.label } : body;
}

// One request in flight per kind; a newer ask replaces a waiting one, so a fast hand never
// queues up stale images.
function latest(task) {
  let running = false;
  let waiting = null;
  return function ask(arg) {
    if (running) {
      waiting = { arg };
      return;
    }
    running = true;
    window.kerasae.busy += 1; // requests of this kind still to answer: 0 when the page has settled
    (async () => {
      let next = { arg };
      while (next) {
        waiting = null;
        try {
          await task(next.arg);
        } catch (e) {
          // already shown in the status line
        }
        next = waiting;
      }
      running = false;
      window.kerasae.busy -= 1;
    })();
  };
}

// -- the drawing pad ---------------------------------------------------------------

const pad = $("pad");
const ink = pad.getContext("2d");
let drawing = false;
let drawn = false;

function clearPad() {
  ink.fillStyle = "black";
  ink.fillRect(0, 0, pad.width, pad.height);
  drawn = false;
}

function padPoint(event) {
  const box = pad.getBoundingClientRect();
  return [((event.clientX - box.left) * pad.width) / box.width, ((event.clientY - box.top) * pad.height) / box.height];
}

pad.addEventListener("pointerdown", (event) => {
  event.preventDefault();
  pad.setPointerCapture(event.pointerId);
  if (!drawn || (state.source && state.source.test !== undefined)) clearPad();
  drawing = true;
  const [x, y] = padPoint(event);
  ink.beginPath();
  ink.moveTo(x, y);
  ink.lineTo(x + 0.1, y + 0.1);
  ink.stroke();
});

pad.addEventListener("pointermove", (event) => {
  if (!drawing) return;
  event.preventDefault();
  const [x, y] = padPoint(event);
  ink.lineTo(x, y);
  ink.stroke();
  drawn = true;
  useDrawing();
});

function endStroke() {
  if (!drawing) return;
  drawing = false;
  drawn = true;
  useDrawing();
}
pad.addEventListener("pointerup", endStroke);
pad.addEventListener("pointercancel", endStroke);

function useDrawing() {
  state.source = { image: pad.toDataURL("image/png") };
  reconstruct();
}

// -- reconstruction ---------------------------------------------------------------

const reconstruct = latest(async () => {
  const body = withLabel({ source: state.source, corrupt: $("corrupt").checked });
  const answer = await post("reconstruct", body);
  await Promise.all([setImage($("input-img"), answer.input), setImage($("output-img"), answer.output)]);
  $("noisy-figure").hidden = !answer.noisy;
  if (answer.noisy) await setImage($("noisy-img"), answer.noisy);
  window.kerasae.reconstructions += 1;
  showScore(answer.score);
  state.code = answer.code;
  if (state.info.sliders) {
    showCode();
    await setImage($("decoded-img"), answer.output);
  }
});

// The model's anomaly score of the input, and whether it lies above the entry's threshold.
function showScore(score) {
  const value = score.value.toPrecision(4);
  const verdict =
    score.threshold === null
      ? "no threshold"
      : `${score.flagged ? "flagged" : "normal"}: threshold ${score.threshold.toPrecision(4)}`;
  $("score").textContent = `anomaly score (${state.info.score.kind}) ${value}, ${verdict}`;
  $("score").className = score.flagged ? "status flagged" : "status";
}

function useTest(index) {
  state.source = { test: index };
  const thumb = document.querySelector(`#test-digits img[data-index="${index}"]`);
  ink.drawImage(thumb, 0, 0, pad.width, pad.height);
  drawn = false;
  reconstruct();
}

// -- the code: sliders and the 2-D map ----------------------------------------------

const decode = latest(async (started) => {
  const answer = await post("decode", withLabel({ code: state.code }));
  await setImage($("decoded-img"), answer.image);
  window.kerasae.decodes += 1;
  window.kerasae.decodeLatencies.push(performance.now() - started);
});

function buildSliders() {
  const box = $("sliders");
  box.replaceChildren();
  for (const unit of state.info.unit_order) {
    const [low, high] = state.info.ranges[unit];
    const label = document.createElement("label");
    label.className = "slider";
    const name = document.createElement("span");
    name.textContent = `z${unit}`;
    const input = document.createElement("input");
    Object.assign(input, { type: "range", min: low, max: high, step: (high - low) / 200, value: 0 });
    input.dataset.unit = unit;
    input.addEventListener("input", () => {
      state.code[unit] = Number(input.value);
      drawMap();
      decode(performance.now());
    });
    label.append(name, input);
    box.append(label);
  }
}

function showCode() {
  for (const input of document.querySelectorAll("#sliders input")) {
    input.value = state.code[Number(input.dataset.unit)];
  }
  drawMap();
}

const map = $("map");

function drawMap() {
  if (!state.info.map) return;
  const g = map.getContext("2d");
  const [[x0, x1], [y0, y1]] = state.info.ranges;
  g.fillStyle = "#f4f1ea";
  g.fillRect(0, 0, map.width, map.height);
  g.strokeStyle = "#d8d2c4";
  for (let i = 1; i < 4; i++) {
    g.beginPath();
    g.moveTo((i * map.width) / 4, 0);
    g.lineTo((i * map.width) / 4, map.height);
    g.moveTo(0, (i * map.height) / 4);
    g.lineTo(map.width, (i * map.height) / 4);
    g.stroke();
  }
  const x = ((state.code[0] - x0) / (x1 - x0)) * map.width;
  const y = (1 - (state.code[1] - y0) / (y1 - y0)) * map.height;
  g.fillStyle = "#c0392b";
  g.beginPath();
  g.arc(x, y, 5, 0, 2 * Math.PI);
  g.fill();
}

let mapping = false;
function moveOnMap(event) {
  const box = map.getBoundingClientRect();
  const [[x0, x1], [y0, y1]] = state.info.ranges;
  const u = Math.min(Math.max((event.clientX - box.left) / box.width, 0), 1);
  const v = Math.min(Math.max((event.clientY - box.top) / box.height, 0), 1);
  state.code = [x0 + u * (x1 - x0), y1 - v * (y1 - y0)];
  showCode();
  decode(performance.now());
}
map.addEventListener("pointerdown", (event) => {
  event.preventDefault();
  map.setPointerCapture(event.pointerId);
  mapping = true;
  moveOnMap(event);
});
map.addEventListener("pointermove", (event) => mapping && moveOnMap(event));
map.addEventListener("pointerup", () => (mapping = false));

// -- interpolation and samples -------------------------------------------------------

async function setEnd(which) {
  state[which] = state.source;
  $(`${which}-img`).src = $("input-img").src;
  if (state.a && state.b) await interpolate();
}

async function interpolate() {
  const labels = state.info.conditional ? [state.label, state.label] : [null, null];
  const answer = await post("interpolate", { a: state.a, b: state.b, steps: 10, labels });
  fillImages($("interpolation"), answer.images);
}

async function drawSamples() {
  const body = withLabel({ sampler: $("sampler").value, n: 16, seed: Number($("seed").value) || 0 });
  const answer = await post("sample", body);
  fillImages($("samples"), answer.images);
}

function fillImages(box, urls) {
  box.replaceChildren(
    ...urls.map((url) => {
      const img = document.createElement("img");
      img.src = url;
      return img;
    }),
  );
}

// -- the page ---------------------------------------------------------------------

function buildDigitPicker() {
  const picker = $("digit-picker");
  picker.hidden = false;
  picker.append("class:");
  for (let c = 0; c < state.info.num_classes; c++) {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = c;
    button.dataset.label = c;
    button.addEventListener("click", () => {
      pickLabel(c);
      reconstruct();
      if (state.info.samplers.length) drawSamples().catch(() => {});
    });
    picker.append(button);
  }
}

function pickLabel(label) {
  state.label = label;
  for (const button of document.querySelectorAll("#digit-picker button")) {
    button.classList.toggle("picked", Number(button.dataset.label) === label);
  }
}

function buildTestDigits() {
  const box = $("test-digits");
  for (const digit of state.info.test_digits) {
    const img = document.createElement("img");
    img.src = digit.image;
    img.dataset.index = digit.index;
    img.title = digit.label === null ? `test image ${digit.index}` : `test image ${digit.index}: ${digit.label}`;
    img.addEventListener("click", () => useTest(digit.index));
    box.append(img);
  }
}

async function start() {
  const response = await fetch(api);
  const info = await response.json();
  if (!response.ok) {
    showError(info.error);
    return;
  }
  state.info = info;
  const code = info.code_size === 1 ? "1 number" : `${info.code_size} numbers`;
  $("summary").textContent = `${info.family}: ${info.summary}. Its code: ${code}.`;
  ink.lineWidth = 20;
  ink.lineCap = ink.lineJoin = "round";
  ink.strokeStyle = "white";
  clearPad();
  if (info.corruption) {
    $("corrupt-label").hidden = false;
    $("output-caption").textContent = "restored";
  }
  $("corrupt").addEventListener("change", reconstruct);
  $("clear").addEventListener("click", () => {
    clearPad();
    useDrawing();
  });
  if (info.conditional) {
    buildDigitPicker();
    state.label = info.test_digits.length && info.test_digits[0].label !== null ? info.test_digits[0].label : 0;
  }
  if (info.sliders) {
    $("code-block").hidden = false;
    buildSliders();
    map.hidden = !info.map;
  }
  $("set-a").addEventListener("click", () => setEnd("a"));
  $("set-b").addEventListener("click", () => setEnd("b"));
  if (info.samplers.length) {
    $("sample-block").hidden = false;
    for (const name of info.samplers) {
      const option = document.createElement("option");
      option.value = option.textContent = name;
      $("sampler").append(option);
    }
    $("draw-samples").addEventListener("click", () => drawSamples().catch(() => {}));
  }
  buildTestDigits();
  if (info.conditional) pickLabel(state.label);
  const first = document.querySelector("#test-digits img");
  if (first) {
    await first.decode().catch(() => {});
    useTest(0);
  } else {
    useDrawing();
  }
  if (info.samplers.length) await drawSamples().catch(() => {});
  window.kerasae.ready = true;
}

start();
