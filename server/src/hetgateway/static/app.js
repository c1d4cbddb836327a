// hetserve web page: send one image to the gateway, draw its answer.
//
// Plain ES module, no dependencies. Talks only to the gateway it was served from, through the
// HTTP contract (ARCHITECTURE.md, hetcontract.api): GET v1/models, GET v1/models/{name},
// POST v1/models/{name}/predict with {"inputs": [{"image": base64}], "top_k": k} (and, for a
// calibrated model, "coverage" and "risk" from its table).
// Paths are relative so the page also works behind a path prefix.

const API_KEY_STORAGE = "hetserve.apiKey";
const API_KEY_HEADER = "X-API-Key";
const EXAMPLES_MANIFEST = "static/examples/manifest.json";
const DEFAULT_TOP_K = 5;
// A share of a top class's probability movement below this is called small (the gateway
// already leaves out shares under hetcontract.MIN_CONFUSABLE_SHARE).
const SMALL_SHARE = 0.1;
const NON_BREAKING_HYPHEN = "\u2011";
const HEAD_NAMES = {
  het: "HET",
  het_pe: "HET (parameter-efficient)",
  het_sigmoid: "HET sigmoid",
  het_xl: "HET-XL",
  det: "deterministic",
};

const $ = (id) => document.getElementById(id);

/** What the page currently shows; one object, changed only by the handlers below. */
const state = {
  models: new Map(),  // name -> ModelSummary
  cards: new Map(),   // name -> model card (from GET v1/models/{name})
  decisions: new Map(),  // name -> DecisionSupport (from GET v1/models/{name}), or null
  model: null,        // selected model name
  image: null,        // {base64, name}
  requestSeq: 0,      // answers to older requests are dropped
};

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// ---- HTTP --------------------------------------------------------------------------------

function apiKey() {
  return sessionStorage.getItem(API_KEY_STORAGE) || "";
}

async function apiFetch(path, { method = "GET", body = undefined } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const key = apiKey();
  if (key) headers[API_KEY_HEADER] = key;
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    throw new ApiError(0, "unreachable", `The gateway cannot be reached (${err.message}).`);
  }
  const payload = await response.json().catch(() => null);
  if (!response.ok) {
    const error = payload && payload.error ? payload.error : {};
    throw new ApiError(
      response.status,
      error.code || `http_${response.status}`,
      error.message || response.statusText || "request failed",
    );
  }
  return payload;
}

function readAsBase64(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(",", 2)[1] || "");
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
}

// ---- status and errors ---------------------------------------------------------------------

/** Announce ``text``; ``visible: false`` keeps it for screen readers only. */
function setStatus(text, { visible = true } = {}) {
  const status = $("status");
  status.textContent = text;
  status.classList.toggle("visually-hidden", !visible);
}

function showError(err) {
  const box = $("error");
  let text = err instanceof ApiError ? `${err.message} (${err.code})` : String(err);
  if (err instanceof ApiError && err.status === 401) {
    text = "This gateway needs an API key: enter it under “API key” above.";
    $("api-key").closest("details").open = true;
    $("api-key").focus();
  }
  box.textContent = text;
  box.hidden = false;
  setStatus("Failed.");
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

// ---- models --------------------------------------------------------------------------------

async function loadModels() {
  const container = $("model-options");
  let list;
  try {
    list = await apiFetch("v1/models");
  } catch (err) {
    container.textContent = "Models unavailable.";
    showError(err);
    return;
  }
  state.models = new Map(list.models.map((m) => [m.name, m]));
  // HET models first, the deterministic baseline last: the switch reads "HET | det".
  const ordered = [...list.models].sort((a, b) => (a.head === "det") - (b.head === "det"));
  container.replaceChildren(...ordered.map(modelOption));
  // Open on the gateway's default model when it is a HET model, else on the first HET one.
  const fallback = ordered.find((m) => m.ready) || ordered[0];
  const byDefault = state.models.get(list.default_model);
  const preferred = byDefault && byDefault.ready && byDefault.head !== "det"
    ? byDefault.name
    : fallback && fallback.name;
  if (preferred) await selectModel(preferred, { predictAgain: false });
}

function modelOption(model) {
  const label = document.createElement("label");
  label.className = "segment";
  const input = document.createElement("input");
  input.type = "radio";
  input.name = "model";
  input.value = model.name;
  input.disabled = !model.ready;
  input.dataset.testid = "model-option";
  input.addEventListener("change", () => selectModel(model.name, { predictAgain: true }));
  const name = document.createElement("span");
  name.className = "segment-name";
  name.textContent = model.name;
  const head = document.createElement("span");
  head.className = "segment-head";
  head.textContent = (HEAD_NAMES[model.head] || model.head) + (model.ready ? "" : " · not ready");
  label.append(input, name, head);
  return label;
}

async function selectModel(name, { predictAgain }) {
  state.model = name;
  for (const input of document.querySelectorAll('input[name="model"]')) {
    input.checked = input.value === name;
  }
  await loadCard(name);
  if (predictAgain && state.image) await predict();
}

async function loadCard(name) {
  if (!state.cards.has(name)) {
    try {
      const detail = await apiFetch(`v1/models/${encodeURIComponent(name)}`);
      state.cards.set(name, detail.model_card);
      state.decisions.set(name, detail.decisions || null);
    } catch (err) {
      showError(err);
      return;
    }
  }
  const card = state.cards.get(name);
  const parts = [
    `K=${card.num_classes}`,
    `R=${card.num_factors}`,
    `S=${card.mc_samples}`,
    `τ=${formatNumber(card.temperature, 2)}`,
  ];
  const mc = card.monte_carlo;
  if (mc && card.head !== "det") parts.push(mcDescription(mc));
  const calibration = card.calibration;
  parts.push(calibration
    ? `decisions calibrated on ${calibration.images} ${calibration.label_source}-label images`
    : "no decisions (not calibrated)");
  const info = $("model-info");
  info.textContent = `${HEAD_NAMES[card.head] || card.head}: ${parts.join(" · ")}`;
  info.title = "K classes, R covariance factors, S Monte Carlo samples (and their design), " +
    "τ softmax temperature; the error is |served − exact| of the averaged probabilities, " +
    "99th percentile over held-out images";
  fillTopK(card.top_k);
  fillLevels(state.decisions.get(name));
}

/** The coverage and risk a calibrated model offers, its defaults selected; hidden without. */
function fillLevels(support) {
  const available = Boolean(support && support.available);
  $("level-rows").hidden = !available;
  if (!available) return;
  fillLevel($("coverage"), support.coverages, support.default_coverage);
  fillLevel($("risk"), support.risks, support.default_risk);
}

function fillLevel(select, levels, fallback) {
  const wanted = Number(select.value);
  select.replaceChildren(...levels.map((level) => {
    const option = document.createElement("option");
    option.value = String(level);
    option.textContent = formatLevel(level);
    return option;
  }));
  select.value = String(levels.includes(wanted) ? wanted : fallback);
}

/** "Sobol bank, p̄ error ≤ 0.004 (p99)" from the model card's monte_carlo section. */
function mcDescription(mc) {
  const design = mc.design.replaceAll("_", " ");
  const error = mc.error && mc.error.probs;
  return error
    ? `${design} bank, p̄ error ≤ ${formatNumber(error.p99, 4)} (p99 of ${mc.images} images)`
    : `${design} bank`;
}

function fillTopK(maxK) {
  const select = $("top-k");
  const wanted = Number(select.value) || DEFAULT_TOP_K;
  const options = [];
  for (let k = 1; k <= maxK; k += 1) {
    const option = document.createElement("option");
    option.value = String(k);
    option.textContent = String(k);
    options.push(option);
  }
  select.replaceChildren(...options);
  select.value = String(Math.min(wanted, maxK));
}

// ---- images --------------------------------------------------------------------------------

async function loadExamples() {
  let manifest;
  try {
    const response = await fetch(EXAMPLES_MANIFEST);
    manifest = await response.json();
  } catch {
    $("examples").textContent = "No bundled examples.";
    return;
  }
  $("examples").replaceChildren(...manifest.examples.map(exampleButton));
}

function exampleButton(example) {
  const item = document.createElement("li");
  const button = document.createElement("button");
  button.type = "button";
  button.className = "example";
  button.dataset.testid = "example";
  button.dataset.classId = String(example.class_id);
  button.dataset.file = example.file;
  button.setAttribute("aria-pressed", "false");
  const img = document.createElement("img");
  img.src = `static/examples/${example.file}`;
  img.alt = "";  // the button's text names it
  img.width = 56;
  img.height = 56;
  const caption = document.createElement("span");
  caption.textContent = example.label.replaceAll("-", NON_BREAKING_HYPHEN);
  button.setAttribute("aria-label", `Example: ${example.label}`);
  button.append(img, caption);
  button.addEventListener("click", async () => {
    markExample(button);
    const blob = await (await fetch(img.src)).blob();
    await useImage(blob, `Fashion-MNIST test image labelled ${example.label}`);
  });
  item.append(button);
  return item;
}

function markExample(selected) {
  for (const button of document.querySelectorAll(".example")) {
    button.setAttribute("aria-pressed", String(button === selected));
  }
}

async function useImage(blob, description) {
  clearError();
  const preview = $("preview-image");
  preview.onerror = () => { $("preview").hidden = true; };
  preview.src = URL.createObjectURL(blob);
  preview.alt = `Selected image: ${description}`;
  $("preview-caption").textContent = description;
  $("preview").hidden = false;
  state.image = { base64: await readAsBase64(blob), name: description };
  await predict();
}

function wireFileInput() {
  const input = $("file-input");
  input.addEventListener("change", async () => {
    const file = input.files && input.files[0];
    if (!file) return;
    markExample(null);
    await useImage(file, file.name);
    input.value = "";
  });
  const zone = $("drop-zone");
  for (const type of ["dragenter", "dragover"]) {
    zone.addEventListener(type, (event) => {
      event.preventDefault();
      zone.classList.add("dragging");
    });
  }
  for (const type of ["dragleave", "drop"]) {
    zone.addEventListener(type, () => zone.classList.remove("dragging"));
  }
  zone.addEventListener("drop", async (event) => {
    event.preventDefault();
    const file = event.dataTransfer && event.dataTransfer.files[0];
    if (!file) return;
    markExample(null);
    await useImage(file, file.name);
  });
  // A file dropped beside the zone must not make the browser navigate away.
  for (const type of ["dragover", "drop"]) {
    window.addEventListener(type, (event) => event.preventDefault());
  }
}

// ---- prediction ----------------------------------------------------------------------------

async function predict() {
  if (!state.model || !state.image) return;
  const seq = ++state.requestSeq;
  const model = state.model;
  const topK = Number($("top-k").value) || DEFAULT_TOP_K;
  clearError();
  setStatus(`Asking ${model}…`);
  $("result-panel").setAttribute("aria-busy", "true");
  const body = { inputs: [{ image: state.image.base64 }], top_k: topK };
  const support = state.decisions.get(model);
  if (support && support.available) {
    body.coverage = Number($("coverage").value);
    body.risk = Number($("risk").value);
  }
  try {
    const answer = await apiFetch(`v1/models/${encodeURIComponent(model)}/predict`, {
      method: "POST",
      body,
    });
    if (seq !== state.requestSeq) return;
    renderAnswer(answer);
    const top = answer.results[0].predictions[0];
    setStatus(`${answer.model.name} predicts ${top.label}, ${formatPercent(top.probability)}.`,
      { visible: false });
  } catch (err) {
    if (seq === state.requestSeq) showError(err);
  } finally {
    if (seq === state.requestSeq) $("result-panel").setAttribute("aria-busy", "false");
  }
}

function labelOf(modelName, classId) {
  const model = state.models.get(modelName);
  return model && model.labels[classId] !== undefined ? model.labels[classId] : `class ${classId}`;
}

function renderAnswer(answer) {
  const result = answer.results[0];
  const root = $("result");
  root.dataset.model = answer.model.name;
  $("answered-model").textContent = answer.model.name;
  $("answered-details").textContent = `· version ${answer.model.version}` +
    ` · ${plural(answer.model.mc_samples, "MC sample")}` +
    ` · τ = ${formatNumber(answer.model.temperature, 2)}`;
  $("request-id").textContent = answer.request_id;
  renderDecision(result, answer.model.name);
  renderBars(result.predictions);
  renderEntropy(result.uncertainty, answer.model.num_classes);
  renderHeatmap(result.uncertainty.latent_correlation, answer.model.name);
  renderConfusable(result.uncertainty, answer.model.name);
  root.hidden = false;
}

/**
 * The decision in a reviewer's words: accept the top class (at the stated error among
 * accepted answers) or send the image to review; the classes the label is among at the stated
 * coverage; what the guarantees rest on. An uncalibrated model says why it has none.
 */
function renderDecision(result, modelName) {
  const section = $("decision");
  const verdict = $("decision-verdict");
  const set = $("prediction-set");
  const note = $("calibration-note");
  const support = state.decisions.get(modelName);
  const decided = Boolean(result.decision && result.prediction_set);
  section.classList.toggle("undecided", !decided);
  if (!decided) {
    section.dataset.accept = "";
    verdict.textContent = "No decision: this model was not calibrated.";
    set.textContent = "";
    note.textContent = support && support.reason ? `Why: ${support.reason}.` : "";
    return;
  }
  const { decision, prediction_set: predictionSet } = result;
  const top = result.predictions[0];
  section.dataset.accept = String(decision.accept);
  verdict.replaceChildren(...(decision.accept
    ? [strong("Accept"), `: use “${top.label}”. Among answers accepted this way, at most ` +
       `${formatLevel(decision.risk)} are wrong.`]
    : [strong("Send to review"), ": the model is not sure enough to keep the error among " +
       `accepted answers under ${formatLevel(decision.risk)}.`]));
  const members = predictionSet.classes.map((c) => {
    const chip = document.createElement("span");
    chip.className = "set-member";
    chip.dataset.testid = "set-member";
    chip.dataset.classId = String(c.class_id);
    chip.textContent = c.label;
    return chip;
  });
  set.dataset.coverage = String(predictionSet.coverage);
  if (members.length === 0) {
    set.textContent = `No class is plausible enough at ${formatLevel(predictionSet.coverage)} ` +
      "coverage: this image is unlike the images the model was calibrated on.";
  } else {
    set.replaceChildren(
      `With ${formatLevel(predictionSet.coverage)} coverage, the label is ` +
        (members.length === 1 ? "" : "one of "),
      ...members.flatMap((chip, i) => (i === 0 ? [chip] : [", ", chip])),
      ".",
    );
  }
  note.textContent = support && support.available
    ? `${formatLevel(predictionSet.coverage)} of images like the calibration images get a set ` +
      "holding their label; the bound on errors among accepted answers holds with probability " +
      `${formatLevel(1 - decision.delta)}. The model was ${support.reason}.`
    : "";
}

function renderBars(predictions) {
  $("bars").replaceChildren(...predictions.map((p) => {
    const item = document.createElement("li");
    item.className = "bar-row";
    item.dataset.testid = "prob-bar";
    item.dataset.classId = String(p.class_id);
    item.dataset.label = p.label;
    item.dataset.probability = String(p.probability);
    const label = document.createElement("span");
    label.className = "bar-label";
    label.textContent = p.label;
    const track = document.createElement("span");
    track.className = "bar-track";
    track.setAttribute("aria-hidden", "true");
    const fill = document.createElement("span");
    fill.className = "bar-fill";
    fill.style.width = `${(100 * clamp01(p.probability)).toFixed(2)}%`;
    track.append(fill);
    const value = document.createElement("span");
    value.className = "bar-value";
    value.textContent = formatPercent(p.probability);
    item.append(label, track, value);
    return item;
  }));
}

function renderEntropy(uncertainty, numClasses) {
  const maxEntropy = Math.log(numClasses);
  const meter = $("entropy-meter");
  meter.setAttribute("aria-valuemax", String(maxEntropy));
  meter.setAttribute("aria-valuenow", String(uncertainty.predictive_entropy));
  meter.setAttribute("aria-valuetext",
    `${formatNumber(uncertainty.predictive_entropy, 3)} nats of at most ${formatNumber(maxEntropy, 3)}`);
  $("entropy-fill").style.width = `${(100 * clamp01(uncertainty.normalized_entropy)).toFixed(2)}%`;
  $("entropy-max").textContent = `log ${numClasses} = ${formatNumber(maxEntropy, 3)} (uniform)`;
  setFigure("entropy-value", uncertainty.predictive_entropy, `${formatNumber(uncertainty.predictive_entropy, 3)} nats`);
  setFigure("entropy-normalized", uncertainty.normalized_entropy, formatNumber(uncertainty.normalized_entropy, 3));
  setFigure("entropy-expected", uncertainty.expected_entropy, `${formatNumber(uncertainty.expected_entropy, 3)} nats`);
  setFigure("entropy-mi", uncertainty.mutual_information, `${formatNumber(uncertainty.mutual_information, 3)} nats`);
  $("entropy-value").dataset.maxEntropy = String(maxEntropy);
}

function setFigure(id, value, text) {
  const element = $(id);
  element.dataset.value = String(value);
  element.textContent = text;
}

function renderHeatmap(correlation, modelName) {
  const ids = correlation.class_ids;
  const names = ids.map((id) => labelOf(modelName, id));
  const table = $("heatmap");
  const caption = document.createElement("caption");
  caption.className = "visually-hidden";
  caption.textContent = "Correlation between the latent logits of the top classes";
  const head = document.createElement("thead");
  const headRow = document.createElement("tr");
  const corner = document.createElement("td");
  headRow.append(corner, ...names.map((name) => headerCell(name, "col")));
  head.append(headRow);
  const body = document.createElement("tbody");
  correlation.matrix.forEach((row, i) => {
    const tr = document.createElement("tr");
    tr.append(headerCell(names[i], "row"));
    row.forEach((value, j) => tr.append(heatmapCell(value, i, j, ids, names)));
    body.append(tr);
  });
  table.replaceChildren(caption, head, body);
}

function headerCell(text, scope) {
  const th = document.createElement("th");
  th.scope = scope;
  th.textContent = text;
  return th;
}

function heatmapCell(value, i, j, ids, names) {
  const td = document.createElement("td");
  td.className = i === j ? "cell diagonal" : "cell";
  td.dataset.testid = "heatmap-cell";
  td.dataset.row = String(i);
  td.dataset.col = String(j);
  td.dataset.rowClass = String(ids[i]);
  td.dataset.colClass = String(ids[j]);
  td.dataset.value = String(value);
  td.textContent = formatNumber(value, 2);
  td.title = `${names[i]} / ${names[j]}: ${formatNumber(value, 3)}`;
  if (i !== j) {
    td.style.background = correlationColour(value);
    td.style.color = Math.abs(value) > 0.55 ? "#fff" : "var(--ink)";
  }
  return td;
}

/** Diverging scale: -1 blue, 0 white, +1 red. */
function correlationColour(value) {
  const t = Math.min(1, Math.abs(value));
  const [r, g, b] = value >= 0 ? [178, 34, 52] : [33, 92, 170];
  const mix = (c) => Math.round(255 + (c - 255) * t);
  return `rgb(${mix(r)}, ${mix(g)}, ${mix(b)})`;
}

function renderConfusable(uncertainty, modelName) {
  const sign = confusionSign(modelName);
  renderConfusableSummary(uncertainty.confusable, modelName, sign);
  renderConfusableList(uncertainty.confusable, modelName, sign);
}

/**
 * +1 for the sigmoid head, whose shares say which labels rise together (co-occurring labels);
 * -1 for the softmax heads, whose shares say where a class's probability goes
 * (hetcontract Confusable).
 */
function confusionSign(modelName) {
  const model = state.models.get(modelName);
  return model && model.head === "het_sigmoid" ? 1 : -1;
}

/** One sentence on where the top class's probability moves, or that the model claims none. */
function renderConfusableSummary(confusable, modelName, sign) {
  const summary = $("confusable-summary");
  const top = confusable[0];
  const first = top && top.confused_with[0];
  summary.dataset.pair = first ? `${top.class_id},${first.class_id}` : "";
  if (!first) {
    summary.textContent = state.models.get(modelName)?.head === "det"
      ? "A deterministic model has no noise model: it makes no claim of which classes it confuses."
      : top && top.withheld
        ? "The model's noise moves the top class's probability, but its samples cannot say where precisely enough: no shares are shown."
        : "The model's noise does not move the top class's probability for this image.";
    return;
  }
  summary.replaceChildren(
    "Under the model's label noise, ",
    strong(labelOf(modelName, top.class_id)),
    sign < 0 ? " loses probability mostly to " : " rises mostly together with ",
    strong(first.label),
    ` (${formatPercent(first.share)} of its movement${first.share < SMALL_SHARE ? ", small" : ""}).`,
  );
}

/** Per top class, the other classes (of all K) its probability moves to, with their shares. */
function renderConfusableList(confusable, modelName, sign) {
  $("confusable-lead").textContent = sign < 0
    ? "Where each top class's probability moves under the learned noise (share of its movement):"
    : "Which labels rise with each top label under the learned noise (slope):";
  const items = [];
  for (const entry of confusable) {
    if (!entry.confused_with.length && !entry.withheld) continue;
    const item = document.createElement("li");
    item.dataset.testid = "confusable-item";
    item.dataset.classId = String(entry.class_id);
    item.append(
      strong(labelOf(modelName, entry.class_id)),
      ": ",
      entry.withheld
        ? "withheld (the samples cannot place its movement precisely enough)"
        : entry.confused_with.map((c) => `${c.label} (${formatPercent(c.share)})`).join(", "),
    );
    items.push(item);
  }
  $("confusable").replaceChildren(...items);
  $("confusable-lead").hidden = items.length === 0;
}

function strong(text) {
  const element = document.createElement("strong");
  element.textContent = text;
  return element;
}

// ---- formatting ----------------------------------------------------------------------------

function clamp01(x) {
  return Math.max(0, Math.min(1, x));
}

function formatNumber(x, digits) {
  const text = Number(x).toFixed(digits);
  return text.startsWith("-") && Number(text) === 0 ? text.slice(1) : text.replace("-", "−");
}

function plural(count, noun) {
  return `${count} ${noun}${count === 1 ? "" : "s"}`;
}

function formatPercent(p) {
  return `${(100 * p).toFixed(1)} %`;
}

/** A calibrated level as a reader says it: 0.9 -> "90 %", 0.995 -> "99.5 %". */
function formatLevel(level) {
  return `${Number((100 * level).toPrecision(6))} %`;
}

// ---- API key -------------------------------------------------------------------------------

function wireApiKey() {
  const input = $("api-key");
  input.value = apiKey();
  $("auth-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    sessionStorage.setItem(API_KEY_STORAGE, input.value.trim());
    setStatus("API key saved for this tab.");
    clearError();
    state.cards.clear();
    await loadModels();
    if (state.image) await predict();
  });
  $("api-key-clear").addEventListener("click", () => {
    sessionStorage.removeItem(API_KEY_STORAGE);
    input.value = "";
    setStatus("API key cleared.");
  });
}

// ---- start ---------------------------------------------------------------------------------

async function start() {
  wireApiKey();
  wireFileInput();
  $("top-k").addEventListener("change", () => predict());
  $("coverage").addEventListener("change", () => predict());
  $("risk").addEventListener("change", () => predict());
  fillTopK(DEFAULT_TOP_K);
  await Promise.all([loadModels(), loadExamples()]);
  document.body.dataset.ready = "true";
}

start();
