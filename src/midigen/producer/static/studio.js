// midigen studio: the page's side of src/midigen/producer/studio.py (its docstring lists the API).
// Plain DOM, no framework, nothing from another site. Every POST carries X-Midigen-Studio.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { fields: [], styles: [], primer: null, a: null, b: null };
const FIGURES = [["n_notes", "notes", 0], ["on_beat", "on beat", 2], ["in_scale", "in scale", 2],
                 ["polyphony", "polyphony", 2], ["pitch_range", "range", 0], ["note_density", "notes/beat", 2]];

function el(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  for (const child of children) node.append(child);
  return node;
}

function say(text, ok = false) {
  const box = $("message");
  box.hidden = !text;
  box.textContent = text || "";
  box.className = ok ? "ok" : "";
}

async function call(path, body, raw = false) {
  const headers = { "X-Midigen-Studio": "1" };
  if (!raw) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { method: "POST", headers, body: raw ? body : JSON.stringify(body) });
  let data;
  try { data = await response.json(); } catch (e) { data = { error: `the server answered ${response.status}` }; }
  if (!response.ok) throw new Error(data.error || `the server answered ${response.status}`);
  return data;
}

async function busy(button, work) {
  const buttons = document.querySelectorAll("button");
  buttons.forEach((b) => (b.disabled = true));
  const label = button.textContent;
  button.textContent = label + "\u2026";
  try { await work(); } catch (e) { say(e.message); } finally {
    buttons.forEach((b) => (b.disabled = false));
    button.textContent = label;
  }
}

// --- the model and the form ---------------------------------------------------------------

function showModel(info) {
  state.fields = info.fields;
  $("out").textContent = info.out;
  if (!info.model) {
    $("model-line").textContent = "no model: " + (info.error || "load one");
    say(info.error || "no model loaded: name one above");
    return;
  }
  $("model-line").textContent = "model: " + info.model.describe;
  $("model-ref").value = info.model.ref;
  $("card-box").hidden = !info.model.card;
  $("card").innerHTML = info.model.card ? markdown(info.model.card) : "";
  state.styles = info.model.styles;
  const box = $("styles");
  box.replaceChildren();
  for (const style of info.model.styles) {
    const value = el("span", { textContent: "0" });
    const slider = el("input", { type: "range", min: 0, max: 1, step: 0.05, value: 0, name: style });
    slider.setAttribute("aria-label", "style " + style);
    slider.addEventListener("input", () => { value.textContent = slider.value; blendNote(); });
    box.append(el("label", { textContent: style }), slider, value);
  }
  if (!info.model.styles.length) box.append(el("span", { className: "hint", textContent: "this model has no styles" }));
  blendNote();
  buildFields();
}

function blendNote() {
  const any = [...document.querySelectorAll("#styles input")].some((s) => Number(s.value) > 0);
  $("blend-note").textContent = any ? "a blend of the weighted styles" : "all at 0: the model's even blend";
}

function buildFields() {
  const first = $("fields-first"), more = $("fields-more");
  first.replaceChildren();
  more.replaceChildren();
  for (const f of state.fields) {
    let input;
    if (f.choices) {
      input = el("select");
      for (const c of f.choices) input.append(el("option", { value: c, textContent: c || "(none)" }));
      input.value = f.default ?? "";
    } else {
      input = el("input", { value: f.default ?? "", size: 8 });
    }
    input.name = f.name;
    input.dataset.field = f.name;
    const label = el("label", { className: "field", title: f.help }, f.label, input, el("small", { textContent: f.help }));
    (f.first ? first : more).append(label);
  }
}

function requestFields() {
  const values = {};
  document.querySelectorAll("[data-field]").forEach((input) => { values[input.dataset.field] = input.value; });
  return values;
}

function styleWeights() {
  const weights = {};
  document.querySelectorAll("#styles input").forEach((s) => { if (Number(s.value) > 0) weights[s.name] = Number(s.value); });
  return Object.keys(weights).length ? weights : null;
}

function markdown(text) {  // the model card: headings, bullets, `code` and **bold**, escaped first
  const esc = (s) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  const inline = (s) => esc(s).replace(/`([^`]+)`/g, "<code>$1</code>").replace(/\*\*([^*]+)\*\*/g, "<b>$1</b>");
  let html = "", list = false;
  for (const line of text.split("\n")) {
    const heading = line.match(/^(#{1,3})\s+(.*)/);
    const bullet = line.match(/^\s*[-*]\s+(.*)/);
    if (list && !bullet) { html += "</ul>"; list = false; }
    if (heading) html += `<h${heading[1].length}>${inline(heading[2])}</h${heading[1].length}>`;
    else if (bullet) { if (!list) { html += "<ul>"; list = true; } html += `<li>${inline(bullet[1])}</li>`; }
    else if (line.trim()) html += `<p>${inline(line)}</p>`;
  }
  return html + (list ? "</ul>" : "");
}

// --- clips: the primer and the ends of an interpolation -------------------------------------

function setClip(role, clip) {
  state[role] = clip;
  const box = $(role + "-chosen");
  box.replaceChildren();
  if (!clip) return;
  const clear = el("button", { type: "button", textContent: "clear" });
  clear.addEventListener("click", (e) => { e.preventDefault(); setClip(role, null); });
  box.append(clip.name + (clip.events ? ` (${clip.events} events)` : ""), clear);
}

async function upload(role, file) {
  say("");
  try {
    const clip = await call("/api/clips?name=" + encodeURIComponent(file.name), file, true);
    setClip(role, clip);
  } catch (e) {
    setClip(role, null);
    say(e.message);
  }
}

function dropZone(role) {
  const zone = $(role + "-drop"), picker = $(role + "-file");
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    if (e.dataTransfer.files.length) upload(role, e.dataTransfer.files[0]);
  });
  picker.addEventListener("change", () => { if (picker.files.length) upload(role, picker.files[0]); picker.value = ""; });
}

async function ideaAsClip(role, idea) {
  try { setClip(role, await call("/api/clips/idea", { id: idea.id })); say(`${idea.name} is ${role === "primer" ? "the primer" : role.toUpperCase()}`, true); }
  catch (e) { say(e.message); }
}

// --- ideas -----------------------------------------------------------------------------------

function showBatch(result, what) {
  const ideas = el("div", { className: "ideas" });
  for (const idea of result.ideas) ideas.append(ideaCard(idea));
  const seed = `seed ${result.seed}` + (result.fresh_seed ? " (fresh: type it in seed to write these again)" : "");
  const heading = el("h3", { textContent: `${what}: ${result.ideas.length} ideas, ${seed}, ` +
    `usable ${result.ideas.length - result.unusable} of ${result.ideas.length}, ${result.seconds} s` });
  heading.title = result.basis;
  const batch = el("div", { className: "batch" }, heading);
  const own = result.own_meter;
  if (own) batch.append(el("p", { className: "hint", textContent: `Real ${own.style} music is mostly in ` +
    `${own.beats}-beat bars (${Math.round(100 * own.share)}% of its training windows, most often ${own.meter}); ` +
    `these are ${result.meter}: set meter to ${own.meter} to write the style in its own.` }));
  batch.append(ideas);
  const batches = $("batches");
  if (!batches.querySelector(".batch")) batches.replaceChildren();
  batches.prepend(batch);
}

function ideaCard(idea) {
  const tick = el("input", { type: "checkbox", value: idea.id, className: "keep" });
  tick.setAttribute("aria-label", "keep " + idea.name);
  const title = el("header", {}, tick, idea.name + (idea.weight != null ? `  (weight of B ${idea.weight.toFixed(2)})` : ""));
  const roll = el("img", { src: idea.roll_url, alt: "piano roll of " + idea.name, loading: "lazy" });
  const audio = el("audio", { controls: true, preload: "auto", src: idea.audio_url });
  const f = idea.figures;
  const figures = FIGURES.filter(([k]) => f[k] != null).map(([k, label, digits]) => `${label} ${Number(f[k]).toFixed(digits)}`);
  if (idea.copy != null) figures.push(`copy ${idea.copy.toFixed(2)}`);
  const verdict = el("div", { className: "verdict " + (idea.usable ? "yes" : "no"),
    textContent: idea.usable ? "usable as it is" : "not usable: " + idea.reasons.join("; ") });
  verdict.title = idea.against || "";
  const link = el("a", { href: idea.midi_url, download: idea.name, textContent: "\u2913 " + idea.name, draggable: true });
  // Chrome lets a file be dragged out of the page into a DAW or a folder: DownloadURL.
  link.addEventListener("dragstart", (e) => e.dataTransfer.setData("DownloadURL",
    `audio/midi:${idea.name}:${new URL(idea.midi_url, location.href).href}`));
  const actions = el("div", { className: "actions" }, link);
  for (const [role, label] of [["primer", "continue it"], ["a", "as A"], ["b", "as B"]]) {
    const button = el("button", { type: "button", textContent: label });
    button.addEventListener("click", () => ideaAsClip(role, idea));
    actions.append(button);
  }
  const card = el("div", { className: "idea" + (idea.usable ? "" : " unusable") }, title, roll, audio,
                  el("div", { className: "figures", textContent: figures.join(" \u00b7 ") }), verdict, actions);
  card.dataset.name = idea.name;
  return card;
}

// --- the buttons -----------------------------------------------------------------------------

async function generate() {
  say("");
  const result = await call("/api/generate", { fields: requestFields(), style: styleWeights(),
                                               primer: state.primer && state.primer.id });
  showBatch(result, state.primer ? `continuing ${state.primer.name}` : "generated");
}

async function interpolate() {
  say("");
  const result = await call("/api/interpolate", { fields: requestFields(), a: state.a && state.a.id,
                                                  b: state.b && state.b.id, steps: $("steps").value });
  showBatch(result, `${state.a.name} to ${state.b.name}`);
}

async function keep() {
  const ids = [...document.querySelectorAll("input.keep:checked")].map((t) => t.value);
  const result = await call("/api/keep", { ids, folder: $("keep-folder").value, force: $("keep-force").checked,
                                           audio: $("keep-audio").checked });
  say(`kept ${result.written.length} files in ${result.folder}: ` +
      result.written.map((p) => p.split("/").pop()).join(", "), true);
}

async function loadModel(event) {
  event.preventDefault();
  await busy(event.submitter || $("generate"), async () => {
    say("");
    showModel(await call("/api/model", { ref: $("model-ref").value }));
    say("model loaded", true);
  });
}

async function start() {
  for (const role of ["primer", "a", "b"]) dropZone(role);
  $("generate").addEventListener("click", () => busy($("generate"), generate));
  $("interpolate").addEventListener("click", () => busy($("interpolate"), interpolate));
  $("keep").addEventListener("click", () => busy($("keep"), keep));
  $("model-form").addEventListener("submit", loadModel);
  try {
    const response = await fetch("/api/model");
    showModel(await response.json());
  } catch (e) {
    say("the studio server does not answer: is `midigen studio` still running?");
  }
}

start();
