// The review page. Every value from the run is model output: it is only ever set with textContent, never as
// HTML, and the server's Content-Security-Policy refuses inline script as a second line of defence.
"use strict";
const TOKEN = document.querySelector('meta[name="cai-token"]').content;
const $ = (id) => document.getElementById(id);
const state = { meta: null, offset: 0, limit: 50, rows: [], index: -1, row: null };

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

async function api(path, body) {
  const opts = { headers: { "X-Cai-Token": TOKEN } };
  if (body) {
    opts.method = "POST";
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const r = await fetch(path, opts);
  const data = await r.json();
  if (!r.ok) throw new Error(data.error || r.statusText);
  return data;
}

function showCounts(c) {
  const parts = Object.entries(c.splits).map(([s, n]) => `${s}: ${n.keep} kept, ${n.drop} dropped, ${n.flip} flipped`);
  $("counts").textContent = `reviewed ${c.reviewed} (${c.changed} changed)` + (parts.length ? " · " + parts.join(" · ") : "");
}

async function init() {
  state.meta = await api("/api/meta");
  $("run").textContent = state.meta.run;
  for (const s of Object.keys(state.meta.splits)) {
    const o = el("option", `${s} (${state.meta.splits[s].rows})`);
    o.value = s;
    $("split").appendChild(o);
  }
  showCounts(state.meta.counts);
  // `cai review --queue NAME` opens the page on a split and one of its review queues (?split=&queue=).
  const asked = new URLSearchParams(location.search);
  if (asked.get("split") && state.meta.splits[asked.get("split")]) $("split").value = asked.get("split");
  splitChanged(asked.get("queue") || "");
  for (const id of ["split", "queue", "principle", "flag", "p_min", "p_max"]) $(id).addEventListener("change", () => {
    if (id === "split") splitChanged(); else { state.offset = 0; load(); }
  });
  let timer;
  $("q").addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(() => { state.offset = 0; load(); }, 250); });
  $("filters").addEventListener("submit", (e) => e.preventDefault());
  $("prev").addEventListener("click", () => { state.offset = Math.max(0, state.offset - state.limit); load(); });
  $("next").addEventListener("click", () => { state.offset += state.limit; load(); });
  document.addEventListener("keydown", onKey);
}

function splitChanged(queue) {
  const info = state.meta.splits[$("split").value];
  const qs = $("queue");
  qs.replaceChildren(el("option", "none"));
  qs.firstChild.value = "";
  for (const [name, q] of Object.entries(info.queues || {})) { const o = el("option", name); o.value = name; o.title = q.help; qs.appendChild(o); }
  $("queue-box").hidden = !Object.keys(info.queues || {}).length;
  if (queue && (info.queues || {})[queue]) qs.value = queue;
  const p = $("principle");
  p.replaceChildren(el("option", "any"));
  p.firstChild.value = "";
  for (const name of info.principles) { const o = el("option", name); o.value = name; p.appendChild(o); }
  for (const e of document.querySelectorAll(".pairs")) e.hidden = !info.label;
  state.offset = 0;
  load();
}

async function load() {
  const params = new URLSearchParams({ split: $("split").value, offset: state.offset, limit: state.limit });
  for (const id of ["q", "queue", "principle", "flag", "p_min", "p_max"]) if ($(id).value) params.set(id, $(id).value);
  const seq = (state.seq = (state.seq || 0) + 1);
  const data = await api("/api/rows?" + params);
  if (seq !== state.seq) return; // a newer filter was asked for while this one ran
  state.rows = data.rows;
  const list = $("rows");
  list.replaceChildren();
  data.rows.forEach((r, i) => {
    const li = el("li");
    li.dataset.id = r.id;
    li.appendChild(el("span", r.decision || "new", "badge " + (r.decision || "")));
    const label = state.meta.splits[$("split").value].label;
    if (label && r[label] != null) li.appendChild(el("span", r[label].toFixed(2) + " ", "p"));
    li.appendChild(el("span", r.prompt));
    // Steps rows: a prompt has several solutions, told apart by their index and their steps.
    if (r.solution !== undefined) li.appendChild(el("span", ` · solution ${r.solution}: ${r.answer}`, "hint"));
    const q = $("queue").value && state.meta.splits[$("split").value].queues[$("queue").value];
    if (q && r[q.sort] != null) li.insertBefore(el("span", `${q.sort} ${r[q.sort].toFixed(3)} `, "p"), li.children[1]);
    li.addEventListener("click", () => select(i));
    list.appendChild(li);
  });
  $("total").textContent = `${data.total} matching rows`;
  $("pageinfo").textContent = data.total ? `${state.offset + 1}–${state.offset + data.rows.length} of ${data.total}` : "";
  $("prev").disabled = state.offset === 0;
  $("next").disabled = state.offset + data.rows.length >= data.total;
  state.index = -1;
}

async function select(i) {
  if (i < 0 || i >= state.rows.length) return;
  state.index = i;
  document.querySelectorAll("#rows li").forEach((li, j) => li.classList.toggle("selected", j === i));
  document.querySelectorAll("#rows li")[i].scrollIntoView({ block: "nearest" });
  const split = $("split").value;
  state.row = await api(`/api/row?split=${encodeURIComponent(split)}&id=${encodeURIComponent(state.rows[i].id)}`);
  render(split, state.row);
}

function messages(list) {
  const box = el("div");
  for (const m of list || []) { box.appendChild(el("div", m.role, "role")); box.appendChild(el("div", m.content, "text")); }
  return box;
}

function diffView(pieces, side) {
  const box = el("div", null, "text");
  for (const [op, text] of pieces) {
    if (op === "=") box.appendChild(document.createTextNode(text));
    else if (op === "-" && side === "old") box.appendChild(el("span", text, "del"));
    else if (op === "+" && side === "new") box.appendChild(el("span", text, "ins"));
  }
  return box;
}

function render(split, row) {
  const d = $("detail");
  d.replaceChildren();
  const info = state.meta.splits[split];
  const bar = el("div", null, "actions");
  const note = el("input");
  note.id = "note";
  note.placeholder = "note (optional)";
  note.value = (row.decision && row.decision.note) || "";
  const actions = info.flippable ? ["keep", "drop", "flip"] : ["keep", "drop"];
  for (const a of actions) {
    const b = el("button", a);
    b.type = "button";
    b.id = "do-" + a;
    b.addEventListener("click", () => decide(a));
    bar.appendChild(b);
  }
  bar.appendChild(note);
  bar.appendChild(el("span", row.decision ? `decided: ${row.decision.action}` : "not reviewed", "status"));
  d.appendChild(bar);
  d.appendChild(el("h3", "prompt"));
  // A steps row keeps its prompt as a plain string (TRL's stepwise format) and the chat in `messages`.
  d.appendChild(typeof row.prompt === "string" ? messages(row.messages || [{ role: "user", content: row.prompt }]) : messages(row.prompt));
  // How a row is laid out comes from its split's view (cai/core/views.py): trace, pair, steps, or text.
  const layouts = { pair: renderPair, steps: renderSteps, trace: renderTrace };
  (layouts[info.layout] || renderText)(d, row, info);
}

function renderText(d, row, info) {
  if (!info.answer) return;
  d.appendChild(el("h3", info.answer));
  const value = row[info.answer];
  const text = Array.isArray(value) ? value.map((m) => (m && m.content !== undefined ? m.content : String(m))).join("\n") : String(value);
  d.appendChild(el("div", text, "text"));
}

function renderPair(d, row) {
  d.appendChild(el("h3", `p_chosen ${row.p_chosen.toFixed(3)} · decided by ${row.decided_by || "judge"} · ${row.judge || ""}`));
  const cols = el("div", null, "cols");
  for (const side of ["chosen", "rejected"]) {
    const c = el("div");
    c.appendChild(el("h4", side));
    c.appendChild(el("div", (row[side] || []).map((m) => m.content).join("\n"), "text " + side));
    cols.appendChild(c);
  }
  d.appendChild(cols);
  const t = el("table", null, "votes");
  const head = el("tr");
  for (const h of ["principle", "kind", "chosen shown (A)", "chosen shown (B)"]) head.appendChild(el("th", h));
  t.appendChild(head);
  for (const v of row.votes || []) {
    const tr = el("tr");
    const split = (v.p_chosen_ab > 0.5) !== (v.p_chosen_ba > 0.5);
    tr.appendChild(el("td", v.principle));
    tr.appendChild(el("td", v.kind));
    tr.appendChild(el("td", v.p_chosen_ab.toFixed(3), split ? "split" : ""));
    tr.appendChild(el("td", v.p_chosen_ba.toFixed(3), split ? "split" : ""));
    t.appendChild(tr);
  }
  d.appendChild(t);
  for (const f of row.failed_votes || []) d.appendChild(el("div", `failed ${f.principle} ${f.order}: ${f.reason}`, "hint"));
}

function renderTrace(d, row) {
  d.appendChild(el("h3", "initial answer" + (row.initial_p_true != null ? ` · P(True) ${row.initial_p_true.toFixed(2)}` : "")));
  d.appendChild(el("div", row.initial, "text"));
  for (const r of row.revisions || []) {
    d.appendChild(el("h3", `round ${r.round} · ${r.principle}` + (r.regressed ? " · broke a hard rule" : "") +
      (r.p_true != null ? ` · P(True) ${r.p_true.toFixed(2)}` : "") + (row.kept === r.round ? " · kept" : "")));
    d.appendChild(el("h4", "critique"));
    d.appendChild(el("div", r.critique, "text"));
    const cols = el("div", null, "cols");
    const before = el("div"); before.appendChild(el("h4", "before")); before.appendChild(diffView(r.diff, "old"));
    const after = el("div"); after.appendChild(el("h4", "revision")); after.appendChild(diffView(r.diff, "new"));
    cols.appendChild(before);
    cols.appendChild(after);
    d.appendChild(cols);
  }
}

// The class of each step once a person's marks are applied, by the rule the server publishes with
// (cai.core.steps.labelling, PRM800K's): labels stop at the first negative step (unless the row was labelled past it)
// and at a step nobody labelled; the steps after that are unlabelled (null).
function stepClasses(row, changed) {
  const steps = row.steps || row.completions || [];
  const given = steps.map((_, i) => i in changed ? (changed[i] ? "positive" : "negative")
    : row.step_class ? row.step_class[i]
    : row.labels[i] == null ? null : row.labels[i] ? "positive" : "negative");
  let stop = false;
  return given.map((c) => {
    if (stop || c == null) { stop = true; return null; }
    if (c === "negative" && row.step_class && !row.labelled_after_error) stop = true;
    return c;
  });
}

function renderSteps(d, row) {
  const changed = (row.decision && row.decision.steps) || {};
  const action = () => (row.decision && row.decision.action) || "keep";
  const steps = row.steps || row.completions || [];
  const n = steps.length;
  if (row.solution_p != null) {
    const outcome = row.correct == null ? "" : row.correct ? " · final answer correct" : " · final answer wrong";
    const first = row.first_error == null ? "no mistake found" : `first mistake at step ${row.first_error + 1}`;
    d.appendChild(el("h3", `solution ${row.solution} (${row.source}) · solution_p ${row.solution_p.toFixed(3)} · ${first}${outcome}`));
  }
  // Let's Verify's labelling (PRM800K): a person marks the first wrong step; the steps before it are right, and
  // the ones after it are left unlabelled (they build on a mistake, and a PRM does not train on them).
  // "No wrong step" marks every step right.
  const firstWrong = (i) => { const s = {}; for (let j = 0; j < (i < 0 ? n : i + 1); j++) s[j] = i < 0 || j < i; return s; };
  const none = el("button", "no wrong step", "no-wrong");
  none.type = "button";
  none.addEventListener("click", () => decide(action(), firstWrong(-1)));
  d.appendChild(none);
  const classes = stepClasses(row, changed);
  steps.forEach((text, i) => {
    const cls = classes[i];
    const look = { positive: "good", negative: "bad", neutral: "neutral" }[cls] || "unlabelled";
    const box = el("div", null, "step " + look);
    const said = cls == null ? "unlabelled (after the first mistake)" : cls;
    box.appendChild(el("div", `step ${i + 1}: ${said}` + (row.step_p ? ` (p ${row.step_p[i].toFixed(2)})` : "")));
    box.appendChild(el("div", text, "text"));
    for (const v of (row.votes || []).filter((v) => v.step === i)) {
      const split = (v.p_yes_ab > 0.5) !== (v.p_yes_ba > 0.5);
      box.appendChild(el("div", `${v.principle}: P(yes) ${v.p_yes_ab.toFixed(2)} shown (A), ${v.p_yes_ba.toFixed(2)} shown (B)`, "hint" + (split ? " split" : "")));
    }
    if (cls != null) {  // a labelled step can be marked the other way; a neutral one is marked right
      const b = el("button", "relabel", "relabel");
      b.type = "button";
      b.addEventListener("click", () => { changed[i] = cls !== "positive"; decide(action(), changed); });
      box.appendChild(b);
    }
    const w = el("button", "first wrong step", "first-wrong");
    w.type = "button";
    w.addEventListener("click", () => decide(action(), firstWrong(i)));
    box.appendChild(w);
    d.appendChild(box);
  });
}

async function decide(action, steps) {
  if (!state.row) return;
  const split = $("split").value;
  const body = { split, id: state.row.id, action, note: $("note") ? $("note").value : "" };
  if (steps) body.steps = steps;
  const res = await api("/api/decide", body);
  showCounts(res.counts);
  const li = document.querySelectorAll("#rows li")[state.index];
  if (li) { const badge = li.querySelector(".badge"); badge.textContent = action; badge.className = "badge " + action; }
  state.rows[state.index].decision = action;
  await select(state.index);
}

function onKey(e) {
  if (e.target.tagName === "INPUT" || e.target.tagName === "SELECT") {
    if (e.key === "Escape") e.target.blur();
    return;
  }
  const info = state.meta && state.meta.splits[$("split").value];
  if (e.key === "j") select(Math.min(state.rows.length - 1, state.index + 1));
  else if (e.key === "k") select(Math.max(0, state.index - 1));
  else if (e.key === "a") decide("keep");
  else if (e.key === "d") decide("drop");
  else if (e.key === "f" && info && info.flippable) decide("flip");
  else if (e.key === "n" && $("note")) { e.preventDefault(); $("note").focus(); }
  else if (e.key === "/") { e.preventDefault(); $("q").focus(); }
  else return;
  e.preventDefault();
}

init().catch((err) => { $("detail").replaceChildren(el("p", "error: " + err.message, "hint")); });
