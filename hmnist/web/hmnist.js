// hmnist.js: the draw-a-digit page.
//
// The drawing is turned into MNIST's 784 pixels by the steps of
// hmnist/images.py, kept step for step alike (invert a light background,
// level, crop to the ink, fit 20x20 by area averaging, centre the mass in
// 28x28), and the network's forward pass runs here in plain JavaScript
// with the weights from model.js (window.HMNIST_MODEL).
//
// For tests and the console, window.hmnist offers forward(pixels),
// show(pixels), preprocess(grey), clear(), and the last input, output and
// grey image the page used.
(function () {
  "use strict";

  var SIDE = 28; // MNIST's field
  var BOX = 20; // the ink is fitted into BOX x BOX
  var INK = 0.1; // a levelled pixel above INK is ink

  // ------------------------------------------------------------------
  // Grey images: {width, height, data}, data a Float64Array row by row,
  // 0 black and 1 white.

  function greyImage(width, height, data) {
    data = data || new Float64Array(width * height);
    return { width: width, height: height, data: data };
  }

  // Grey levels of RGBA bytes: ITU-R 601 luma, transparency laid on white.
  function greyFromRGBA(rgba, width, height) {
    var img = greyImage(width, height);
    for (var k = 0; k < width * height; k++) {
      var r = rgba[4 * k], g = rgba[4 * k + 1], b = rgba[4 * k + 2];
      var luma = (299 * r + 587 * g + 114 * b) / 255000; // integers, one division
      var alpha = rgba[4 * k + 3] / 255;
      img.data[k] = luma * alpha + (1 - alpha);
    }
    return img;
  }

  // The outer rows and columns, in the order images.border takes them.
  function border(img) {
    var w = img.width, h = img.height, d = img.data, out = [];
    var x, y;
    for (x = 0; x < w; x++) out.push(d[x]);
    for (x = 0; x < w; x++) out.push(d[(h - 1) * w + x]);
    for (y = 1; y < h - 1; y++) out.push(d[y * w]);
    for (y = 1; y < h - 1; y++) out.push(d[y * w + w - 1]);
    return out;
  }

  function median(values) {
    var s = values.slice().sort(function (a, b) { return a - b; });
    var mid = Math.floor(s.length / 2);
    return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
  }

  // Light ink on dark: invert when the border is light.
  function invertIfLight(img) {
    if (median(border(img)) <= 0.5) return img;
    var out = greyImage(img.width, img.height);
    for (var k = 0; k < img.data.length; k++) out.data[k] = 1 - img.data[k];
    return out;
  }

  // Border median to 0, brightest pixel to 1; null when there is no ink.
  function level(img) {
    var background = median(border(img));
    var peak = -Infinity;
    for (var k = 0; k < img.data.length; k++) peak = Math.max(peak, img.data[k]);
    if (peak - background <= INK) return null;
    var out = greyImage(img.width, img.height);
    for (k = 0; k < img.data.length; k++) {
      var v = (img.data[k] - background) / (peak - background);
      out.data[k] = Math.min(1, Math.max(0, v));
    }
    return out;
  }

  // The bounding box of the pixels above INK, cut out as a new image.
  function cropToInk(img) {
    var top = img.height, bottom = -1, left = img.width, right = -1;
    for (var y = 0; y < img.height; y++) {
      for (var x = 0; x < img.width; x++) {
        if (img.data[y * img.width + x] > INK) {
          top = Math.min(top, y);
          bottom = Math.max(bottom, y);
          left = Math.min(left, x);
          right = Math.max(right, x);
        }
      }
    }
    if (bottom < 0) return null;
    var out = greyImage(right - left + 1, bottom - top + 1);
    for (y = 0; y < out.height; y++) {
      for (x = 0; x < out.width; x++) {
        out.data[y * out.width + x] = img.data[(top + y) * img.width + left + x];
      }
    }
    return out;
  }

  // Rows of weights that resize a line of nIn pixels to nOut by area
  // averaging: output j covers [j s, (j + 1) s) with s = nIn / nOut.
  function areaWeights(nIn, nOut) {
    var step = nIn / nOut, rows = [];
    for (var j = 0; j < nOut; j++) {
      var lo = j * step, hi = (j + 1) * step, row = new Float64Array(nIn);
      for (var i = 0; i < nIn; i++) {
        var overlap = Math.min(hi, i + 1) - Math.max(lo, i);
        row[i] = Math.max(overlap, 0) / (hi - lo);
      }
      rows.push(row);
    }
    return rows;
  }

  // Resize so the longer side is BOX, keeping the aspect ratio.
  function fit(img) {
    var w = img.width, h = img.height, scale = BOX / Math.max(h, w);
    var nh = Math.max(1, Math.floor(h * scale + 0.5));
    var nw = Math.max(1, Math.floor(w * scale + 0.5));
    var wy = areaWeights(h, nh), wx = areaWeights(w, nw);
    var x, y, i, sum;
    // Rows first: (nh, h) @ (h, w), then columns: (nh, w) @ (w, nw).
    var tmp = new Float64Array(nh * w);
    for (y = 0; y < nh; y++) {
      for (x = 0; x < w; x++) {
        for (sum = 0, i = 0; i < h; i++) sum += wy[y][i] * img.data[i * w + x];
        tmp[y * w + x] = sum;
      }
    }
    var out = greyImage(nw, nh);
    for (y = 0; y < nh; y++) {
      for (x = 0; x < nw; x++) {
        for (sum = 0, i = 0; i < w; i++) sum += tmp[y * w + i] * wx[x][i];
        out.data[y * nw + x] = sum;
      }
    }
    return out;
  }

  // Centre of mass as [row, col], pixel i at coordinate i.
  function centreOfMass(img) {
    var total = 0, rows = 0, cols = 0;
    for (var y = 0; y < img.height; y++) {
      for (var x = 0; x < img.width; x++) {
        var v = img.data[y * img.width + x];
        total += v;
        rows += v * y;
        cols += v * x;
      }
    }
    return [rows / total, cols / total];
  }

  // Paste into SIDE x SIDE with the centre of mass at pixel (14, 14),
  // shifted by whole pixels and kept inside the field.
  function place(box) {
    var c = centreOfMass(box);
    var top = Math.floor(SIDE / 2 - c[0] + 0.5);
    var left = Math.floor(SIDE / 2 - c[1] + 0.5); // SIDE is even: SIDE / 2 = 14
    top = Math.min(Math.max(top, 0), SIDE - box.height);
    left = Math.min(Math.max(left, 0), SIDE - box.width);
    var pixels = new Array(SIDE * SIDE).fill(0);
    for (var y = 0; y < box.height; y++) {
      for (var x = 0; x < box.width; x++) {
        pixels[(top + y) * SIDE + left + x] = box.data[y * box.width + x];
      }
    }
    return pixels;
  }

  // MNIST's 784 pixels (light ink on black, [0, 1]) for a grey image, or
  // null when it holds no ink.
  function preprocess(grey) {
    var img = invertIfLight(grey);
    if (img.width === SIDE && img.height === SIDE) return Array.from(img.data);
    img = level(img);
    if (!img) return null;
    img = cropToInk(img);
    return img && place(fit(img));
  }

  // ------------------------------------------------------------------
  // The network: sigmoid on every layer, weights[l] is (n_out, n_in).

  var model = window.HMNIST_MODEL || null;

  // The problem with a model document, or "" when it fits the page.
  function checkModel(m) {
    if (!m) return "no model: model.js did not set window.HMNIST_MODEL";
    if (!m.sizes || m.sizes[0] !== SIDE * SIDE || m.sizes[m.sizes.length - 1] !== 10) {
      return "the model must map 784 inputs to 10 outputs";
    }
    for (var l = 0; l < m.layers.length; l++) {
      var layer = m.layers[l];
      if (layer.weights.length !== m.sizes[l + 1] ||
          layer.weights[0].length !== m.sizes[l] ||
          layer.biases.length !== m.sizes[l + 1]) {
        return "layer " + l + " does not match the sizes " + m.sizes.join(",");
      }
    }
    return "";
  }

  // The output activations for 784 input pixels.
  function forward(pixels) {
    var a = Array.from(pixels);
    model.layers.forEach(function (layer) {
      a = layer.weights.map(function (row, o) {
        var z = 0;
        for (var i = 0; i < row.length; i++) z += row[i] * a[i];
        return 1 / (1 + Math.exp(-(z + layer.biases[o])));
      });
    });
    return a;
  }

  // ------------------------------------------------------------------
  // The page.

  var pad = document.getElementById("pad");
  var ctx = pad.getContext("2d", { willReadFrequently: true });
  var preview = document.getElementById("input").getContext("2d");
  var digitEl = document.getElementById("digit");
  var statusEl = document.getElementById("status");
  var barsEl = document.getElementById("bars");
  var bars = [];

  var api = {
    SIDE: SIDE, BOX: BOX, INK: INK,
    model: model,
    ready: false,
    error: "",
    lastGrey: null, // the drawing's grey image as {width, height, data}
    lastInput: null, // the 784 pixels given to the network
    lastOutput: null, // its ten outputs
    lastDigit: null,
    greyFromRGBA: greyFromRGBA,
    preprocess: preprocess,
    forward: forward,
  };

  function makeBars() {
    for (var d = 0; d < 10; d++) {
      var bar = document.createElement("div");
      bar.className = "bar";
      bar.innerHTML = '<div class="fill"></div><div class="value"></div>' +
        '<div class="name">' + d + "</div>";
      barsEl.appendChild(bar);
      bars.push(bar);
    }
  }

  // Draw the outputs as bars and the largest as the prediction.
  function render(pixels, outputs) {
    var best = outputs ? outputs.indexOf(Math.max.apply(null, outputs)) : null;
    bars.forEach(function (bar, d) {
      var v = outputs ? outputs[d] : 0;
      bar.querySelector(".fill").style.height = (100 * v) + "%";
      var value = bar.querySelector(".value");
      value.style.bottom = "calc(" + (100 * v) + "% + 2px)";
      value.textContent = outputs ? v.toFixed(2) : "";
      bar.classList.toggle("best", d === best);
    });
    digitEl.textContent = best === null ? "\u2013" : String(best);
    var image = preview.createImageData(SIDE, SIDE);
    for (var k = 0; k < SIDE * SIDE; k++) {
      var v = pixels ? Math.round(255 * pixels[k]) : 0;
      image.data[4 * k] = image.data[4 * k + 1] = image.data[4 * k + 2] = v;
      image.data[4 * k + 3] = 255;
    }
    preview.putImageData(image, 0, 0);
  }

  // Run the network on 784 pixels, show the result, return the outputs.
  function show(pixels) {
    var outputs = pixels ? forward(pixels) : null;
    api.lastInput = pixels ? Array.from(pixels) : null;
    api.lastOutput = outputs;
    api.lastDigit = outputs ? outputs.indexOf(Math.max.apply(null, outputs)) : null;
    render(pixels, outputs);
    return outputs;
  }

  // Preprocess the drawing and classify it.
  function update() {
    var rgba = ctx.getImageData(0, 0, pad.width, pad.height).data;
    var grey = greyFromRGBA(rgba, pad.width, pad.height);
    api.lastGrey = grey;
    show(preprocess(grey));
  }

  function clear() {
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, pad.width, pad.height);
    api.lastGrey = null;
    show(null);
  }

  // Drawing with pointer events: one path for mouse, pen and touch.
  var drawing = false, last = null, pending = false;

  function position(event) {
    var rect = pad.getBoundingClientRect();
    return [
      (event.clientX - rect.left) * (pad.width / rect.width),
      (event.clientY - rect.top) * (pad.height / rect.height),
    ];
  }

  function strokeTo(point) {
    ctx.beginPath();
    ctx.moveTo(last[0], last[1]);
    ctx.lineTo(point[0], point[1]);
    ctx.stroke();
    last = point;
  }

  // Classify at most once per frame while drawing.
  function scheduleUpdate() {
    if (pending) return;
    pending = true;
    window.requestAnimationFrame(function () {
      pending = false;
      update();
    });
  }

  function startPad() {
    ctx.lineWidth = 22;
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    ctx.strokeStyle = "#000";
    pad.addEventListener("pointerdown", function (event) {
      event.preventDefault();
      pad.setPointerCapture(event.pointerId);
      drawing = true;
      last = position(event);
      strokeTo(last); // a dot where the stroke starts
      scheduleUpdate();
    });
    pad.addEventListener("pointermove", function (event) {
      if (!drawing) return;
      strokeTo(position(event));
      scheduleUpdate();
    });
    function stop() {
      if (!drawing) return;
      drawing = false;
      update();
    }
    pad.addEventListener("pointerup", stop);
    pad.addEventListener("pointercancel", stop);
    document.getElementById("clear").addEventListener("click", clear);
  }

  api.show = show;
  api.update = update;
  api.clear = clear;
  window.hmnist = api;

  makeBars();
  api.error = checkModel(model);
  if (api.error) {
    statusEl.textContent = api.error + ". Run `hmnist serve --model model.npz`, " +
      "or `hmnist export model.npz --out DIR` and open DIR/index.html.";
    statusEl.classList.add("error");
    pad.style.opacity = 0.4;
    return;
  }
  startPad();
  clear();
  statusEl.textContent = "Model " + model.sizes.join("-") + " (" + model.dtype +
    ", sha256 " + model.sha256.slice(0, 12) + "\u2026) from " + model.source.file + ".";
  api.ready = true;
})();
