// rlhp labeling page: two looping clips in sync, four answers, nothing lost.
//
// One timer (requestAnimationFrame) draws both clips from their PNG sprite sheets, so they
// can never drift apart. An answer is shown as saved only after the server's 200 (which
// it sends once the label store has committed it); until then the page retries with the same
// submission id, so a retry can never store an answer twice. The next pair is leased and
// decoded while the current one plays, so it appears at once.
"use strict";

const ANSWER_TEXT = {
  left: "Left is better",
  right: "Right is better",
  equal: "Equally good",
  incomparable: "Can't tell",
};
const SPEEDS = [0.25, 0.5, 0.75, 1, 1.5, 2, 3];
const HOLD_S = 0.4;          // pause on the last frame before a clip loops
const STATE_EVERY_MS = 2000; // poll the run's state (and look for new pairs when idle)
const RENEW_EVERY_MS = 20000; // keep the pairs this tab holds leased
const SIDES = ["left", "right"];

const $ = (id) => document.getElementById(id);

function randomId(bytes = 12) {
  const a = new Uint8Array(bytes);
  crypto.getRandomValues(a); // available on plain http too (randomUUID is not)
  return Array.from(a, (b) => b.toString(16).padStart(2, "0")).join("");
}

function fromStorage(storage, key, make) {
  try {
    let v = storage.getItem(key);
    if (v === null && make) { v = make(); storage.setItem(key, v); }
    return v;
  } catch (e) { return make ? make() : null; }
}

function toStorage(storage, key, value) {
  try { storage.setItem(key, value); } catch (e) { /* private mode: keep it in memory */ }
}

// -- state ---------------------------------------------------------------------------------
const S = {
  client: fromStorage(sessionStorage, "rlhp.client", () => "tab-" + randomId(8)),
  name: fromStorage(localStorage, "rlhp.labeler") || "",
  token: null,
  cur: null,        // {q, img: {left, right}, shownAt, sub}
  queue: [],        // prefetched pairs, decoded and leased
  saving: false,
  undoing: false,
  filling: false,
  undo: JSON.parse(fromStorage(sessionStorage, "rlhp.undo") || "[]"),
  done: Number(fromStorage(sessionStorage, "rlhp.done") || 0),
  times: JSON.parse(fromStorage(sessionStorage, "rlhp.times") || "[]"),
  state: null,
  fps: 15,
  speedIndex: Number(fromStorage(localStorage, "rlhp.speed") || 3),
  paused: false,
  playT: 0,
  lastNow: null,
  offline: false,
  ended: false,     // the run closed this server (it said "closing"): no more pairs from it
  pretrain: null,   // reward-model pretraining as seen here: {first, last: {epoch, t}, updates}, for its pace
};

// The token arrives once in the URL (?token=...): keep it for this tab, drop it from the address bar.
(function takeToken() {
  const url = new URL(location.href);
  const t = url.searchParams.get("token");
  if (t) {
    toStorage(sessionStorage, "rlhp.token", t);
    url.searchParams.delete("token");
    history.replaceState(null, "", url.pathname + url.search + url.hash);
  }
  S.token = t || fromStorage(sessionStorage, "rlhp.token");
})();

function persist() {
  toStorage(sessionStorage, "rlhp.undo", JSON.stringify(S.undo.slice(-50)));
  toStorage(sessionStorage, "rlhp.done", String(S.done));
  toStorage(sessionStorage, "rlhp.times", JSON.stringify(S.times.slice(-50)));
}

// -- server --------------------------------------------------------------------------------
async function api(path, body) {
  const opts = { method: body ? "POST" : "GET", headers: {}, cache: "no-store", credentials: "same-origin" };
  if (S.token) opts.headers["X-RLHP-Token"] = S.token;
  if (body) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const r = await fetch(path, opts);
  const isJson = (r.headers.get("Content-Type") || "").startsWith("application/json");
  const data = isJson ? await r.json().catch(() => null) : null;
  if (!r.ok) {
    const err = new Error((data && data.error) || `HTTP ${r.status}`);
    err.status = r.status;
    err.code = data && data.code;
    throw err;
  }
  return data;
}

async function fetchImage(url) {
  const opts = { cache: "force-cache", credentials: "same-origin", headers: {} };
  if (S.token) opts.headers["X-RLHP-Token"] = S.token;
  const r = await fetch(url, opts);
  if (!r.ok) throw Object.assign(new Error(`clip ${url}: HTTP ${r.status}`), { status: r.status });
  return await createImageBitmap(await r.blob());
}

async function loadPair(q) {
  const item = { q, img: {} };
  await Promise.all(SIDES.map(async (side) => {
    if (q[side].url) item.img[side] = await fetchImage(q[side].url);
  }));
  return item;
}

const sleep = (ms) => new Promise((res) => setTimeout(res, ms));

// -- the pair on screen --------------------------------------------------------------------
function heldIds() {
  return [S.cur, ...S.queue].filter(Boolean).map((i) => i.q.id);
}

function show(item) {
  S.cur = item;
  if (item) {
    item.shownAt = Date.now();
    item.sub = "s" + randomId(12); // one submission id per showing of a pair
    S.playT = 0;
    for (const side of SIDES) setupClip(side, item);
  }
  render();
  layout(); // after render(): the clips must be visible to be measured
}

function setupClip(side, item) {
  const meta = item.q[side];
  const fig = $("clip-" + side);
  const canvas = $("canvas-" + side);
  const has = meta.frames > 0;
  canvas.hidden = !has;
  fig.querySelector(".noframes").hidden = has;
  const problem = S.state && S.state.frames && S.state.frames.problem;
  fig.querySelector(".noframes small").textContent = problem
    ? "this run cannot draw its clips (see above): answer \u201cCan't tell\u201d"
    : "the run kept no pictures of this segment";
  if (has) {
    canvas.width = meta.width;
    canvas.height = meta.height;
  }
  const ends = fig.querySelector(".ends");
  ends.textContent = "";
  const n = Math.max(meta.frames || meta.length || 1, 1);
  for (const e of meta.episode_ends || []) {
    const tick = document.createElement("span");
    tick.style.left = `${((e + 1) / n) * 100}%`;
    tick.title = "episode ended here";
    ends.appendChild(tick);
  }
}

function layout() {
  // Scale clips up as far as the window allows (pixelated), both the same size; the answer
  // buttons and controls line up under them.
  const item = S.cur;
  if (!item) return;
  const avail = document.querySelector(".stage").clientWidth;
  const screenTop = $("clip-left").querySelector(".screen").getBoundingClientRect().top + window.scrollY;
  const below = 13 + 14 + $("answers").offsetHeight + 10 + document.querySelector(".controls").offsetHeight + 22;
  const availH = Math.max(200, window.innerHeight - screenTop - below);
  let w = 320, h = 240; // a 4:3 placeholder when neither clip has frames
  const sized = SIDES.map((s) => item.q[s]).find((m) => m.frames > 0);
  if (sized) { w = sized.width; h = sized.height; }
  const gap = 28;
  const scale = Math.max(1, Math.min(4, (avail - gap) / 2 / w, availH / h));
  const cw = Math.floor(w * scale), ch = Math.floor(h * scale);
  for (const side of SIDES) {
    const screen = $("clip-" + side).querySelector(".screen");
    screen.style.width = cw + "px";
    screen.style.height = ch + "px";
  }
  const row = Math.max(2 * cw + gap, 640) + "px";
  $("answers").style.maxWidth = row;
  document.querySelector(".controls").style.maxWidth = row;
}

function drawFrame(side, index) {
  const item = S.cur;
  const meta = item.q[side];
  const canvas = $("canvas-" + side);
  const fig = $("clip-" + side);
  const n = meta.frames;
  if (n > 0) {
    const i = Math.min(index, n - 1);
    const sx = (i % meta.cols) * meta.width;
    const sy = Math.floor(i / meta.cols) * meta.height;
    const ctx = canvas.getContext("2d");
    ctx.drawImage(item.img[side], sx, sy, meta.width, meta.height, 0, 0, meta.width, meta.height);
    canvas.dataset.frame = String(i);
  }
  const total = Math.max(n || meta.length || 1, 1);
  const i = Math.min(index, total - 1);
  fig.querySelector(".head").style.left = `${((i + 0.5) / total) * 100}%`;
  // Mark the cut where an episode ended inside the segment (the agent never sees it).
  const badge = fig.querySelector(".badge");
  const ends = meta.episode_ends || [];
  let text = "";
  if (ends.includes(i)) text = "episode ends";
  else if (ends.some((e) => e < i)) text = "new episode";
  badge.hidden = !text;
  badge.textContent = text;
  badge.classList.toggle("end", text === "episode ends");
}

function tick(now) {
  if (S.lastNow !== null && !S.paused) S.playT += ((now - S.lastNow) / 1000) * S.fps * SPEEDS[S.speedIndex];
  S.lastNow = now;
  const item = S.cur;
  if (item) {
    const n = Math.max(1, ...SIDES.map((s) => item.q[s].frames || item.q[s].length || 1));
    const hold = Math.max(1, Math.round(HOLD_S * S.fps * SPEEDS[S.speedIndex]));
    const index = Math.min(Math.floor(S.playT) % (n + hold), n - 1);
    for (const side of SIDES) drawFrame(side, index);
    $("frame").textContent = `frame ${index + 1} / ${n}` + (S.queue.length ? " · next pair ready" : "");
  }
  requestAnimationFrame(tick);
}

// -- getting pairs -------------------------------------------------------------------------
async function fill() {
  if (S.filling || S.ended) return;
  S.filling = true;
  try {
    while (!S.ended && (S.cur ? 1 : 0) + S.queue.length < 2) {
      const res = await api("/api/lease", { client: S.client, have: heldIds() });
      S.offline = false;
      if (!res.query) clearServerError();
      updateState(res.state);
      if (!res.query) break;
      if (heldIds().includes(res.query.id)) continue; // came back through an undo meanwhile
      const item = await loadPair(res.query);
      if (S.ended) break; // the run ended while the clips loaded: nothing more can be answered
      if (heldIds().includes(item.q.id)) continue;
      clearServerError();
      if (!S.cur && !S.saving) show(item);
      else S.queue.push(item);
    }
  } catch (e) {
    noteConnection(e);
  } finally {
    S.filling = false;
    render();
  }
}

function advance() {
  show(S.ended ? null : S.queue.shift() || null);
  fill();
}

// -- answering -----------------------------------------------------------------------------
async function answer(kind) {
  const item = S.cur;
  if (!item || S.saving || S.undoing) return;
  S.saving = true;
  pressButton(kind, true);
  render();
  toast("Saving…", "pending");
  const body = {
    query_id: item.q.id, answer: kind, submission_id: item.sub, labeler: S.name || "anonymous",
    client: S.client, shown_at: item.shownAt, answered_at: Date.now(),
  };
  for (let attempt = 1; ; attempt++) {
    body.sent_at = Date.now();
    try {
      const res = await api("/api/answer", body);
      S.offline = false;
      S.undo.push({ answer_id: res.answer_id, answer: res.answer, query_id: res.query_id });
      S.done += 1;
      S.times.push((body.answered_at - item.shownAt) / 1000);
      persist();
      updateState(res.state);
      toast(`✓ Saved: ${ANSWER_TEXT[res.answer]}`, "ok");
      break;
    } catch (e) {
      if (e.status === 409 || e.code === "unknown_query") {
        toast(e.message, "warn");
        break;
      }
      if (e.status && e.status >= 400 && e.status < 500 && e.status !== 408 && e.status !== 429) {
        toast(`Not saved: ${e.message}`, "err");
        S.saving = false;
        pressButton(kind, false);
        render();
        return; // keep the pair on screen
      }
      // No answer from the server (restarting, unreachable): retry with the same submission id.
      noteConnection(e);
      const wait = Math.min(5000, 250 * 2 ** attempt);
      toast(`Not saved yet (${e.message}); retrying in ${(wait / 1000).toFixed(1)} s…`, "err");
      await sleep(wait);
    }
  }
  S.saving = false;
  pressButton(kind, false);
  advance();
}

function pressButton(kind, on) {
  const b = document.querySelector(`button[data-answer="${kind}"]`);
  if (b) b.classList.toggle("pressed", on);
}

async function undo() {
  if (S.saving || S.undoing || S.ended) return;
  const last = S.undo[S.undo.length - 1];
  if (!last) { toast("Nothing to undo", "warn"); return; }
  S.undoing = true;
  render();
  try {
    const res = await api("/api/undo", { client: S.client, answer_id: last.answer_id });
    S.undo.pop();
    S.done = Math.max(0, S.done - 1);
    S.times.pop();
    persist();
    const item = await loadPair(res.query);
    S.queue = S.queue.filter((i) => i.q.id !== item.q.id);
    if (S.cur && S.cur.q.id !== item.q.id) S.queue.unshift(S.cur);
    show(item);
    updateState(res.state);
    toast(`↶ Undone: “${ANSWER_TEXT[res.answer]}”. Answer this pair again.`, "info");
  } catch (e) {
    if (e.status === 403 || e.status === 404 || e.status === 409) {
      S.undo.pop();
      persist();
    }
    if (!e.status) noteConnection(e);
    toast(`Could not undo: ${e.message}`, "err");
  } finally {
    S.undoing = false;
    render();
  }
}

async function renew() {
  const ids = heldIds();
  if (!ids.length) return;
  try {
    const res = await api("/api/renew", { client: S.client, ids });
    // A prefetched pair someone else took (our lease lapsed) is dropped; the shown one stays.
    S.queue = S.queue.filter((i) => !res.lost.includes(i.q.id));
  } catch (e) { noteConnection(e); }
}

async function poll() {
  try {
    updateState(await api("/api/state"));
    S.offline = false;
  } catch (e) { noteConnection(e); }
  if (!S.cur || S.queue.length === 0) fill();
  render();
}

function noteConnection(e) {
  if (!e.status) S.offline = true;
  if (e.status === 401) S.authFailed = e.message;
  else if (e.status) S.serverError = e.message;
}

// -- drawing the page ----------------------------------------------------------------------
const fmt = (n) => (n === null || n === undefined ? "—" : Number(n).toLocaleString("en-US"));

function ago(s) {
  if (s === null || s === undefined) return "—";
  if (s < 90) return `${Math.max(0, Math.round(s))} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  return `${(s / 3600).toFixed(1)} h ago`;
}

function median(xs) {
  if (!xs.length) return null;
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function updateState(st) {
  if (!st) return;
  S.state = st;
  S.fps = st.fps || 15;
  notePretraining(st.status);
  S.authFailed = null;
  // The run is over and its server about to stop: pairs on screen can no longer be answered.
  // Sticky while the server is unreachable; a server that answers again (a resumed run) clears it.
  S.ended = !!st.closing;
  if (S.ended) {
    S.queue = [];
    if (S.cur && !S.saving) show(null);
  }
}

function clearServerError() {
  S.serverError = null;
}

function emptyMessage() {
  const st = S.state;
  if (S.authFailed) return ["This page needs its token", S.authFailed];
  if (!st) return S.offline ? ["Can't reach the labeling server", "Is the run still going? Retrying…"] : ["Connecting…", ""];
  const L = st.labels, s = st.status || {}, budget = st.label_budget;
  const stale = isStale(st) ? ` (The run last reported ${ago(st.status_age_s)}: is it still going?)` : "";
  const saved = "Every answer this page showed as saved is in the run's label store.";
  if (s.phase === "finished" && (S.ended || S.offline))
    return ["The run has finished. Thank you!", `${saved} The labeling server has stopped with it.`];
  if (S.ended)
    return ["The run has stopped", `${saved} The labeling server has stopped with it; rerun the same command to resume, then open the address it prints.`];
  if (S.offline) return ["Can't reach the labeling server", "Retrying… no answer is lost: saved ones are in the store."];
  if (S.serverError) return ["The server could not prepare the next pair", S.serverError + " (retrying)"];
  if (s.phase === "finished") return ["The run has finished. Thank you!", "Every answer is saved. Export the labels with the button at the top."];
  if (budget && L.answered >= budget) return ["The label budget is used up. Thank you!", "The agent goes on training on what it learned from your labels." + stale];
  if (L.pending_for_people > 0)
    return ["Every waiting pair is open elsewhere", `${L.pending_for_people} pair(s) are being labeled in other tabs or by other people; this page takes the next one as soon as it is free.`];
  if (s.phase === "initial labels")
    return ["The agent is collecting new clips…", "It plays with its untrained policy first; the first pairs appear here in a moment." + stale];
  if (s.phase === "pretraining reward model") {
    const next = "Reinforcement learning starts next; new pairs follow, and appear here automatically.";
    const p = pretrainProgress(s);
    if (!p) return ["The reward model is learning from the first labels…", next + stale];
    const left = pretrainLeft(p);
    return ["The reward model is learning from the first labels…",
      `Pretraining the reward model: epoch ${fmt(p.epoch)} of ${fmt(p.total)}` + (left ? ` (${left})` : "") + `. ${next}` + stale];
  }
  if (s.phase === "training")
    return ["The agent is collecting new clips…", "It asks for fewer labels as training goes on; the next pair appears here automatically." + stale];
  return ["No pair is waiting right now", "New pairs appear here as soon as the run asks for them." + stale];
}

// Reward-model pretraining reports its epoch every few epochs (status.json), which at the paper's
// Atari settings can be many minutes apart: its pace, seen from here, sets what counts as stale.
function pretrainProgress(s) {
  const epoch = s && s.pretrain_epoch, total = s && s.pretrain_epochs;
  if (typeof epoch !== "number" || typeof total !== "number" || total <= 0) return null;
  return { epoch, total };
}

function notePretraining(s) {
  const p = s && s.phase === "pretraining reward model" ? pretrainProgress(s) : null;
  if (!p || typeof s.updated_at !== "number") { S.pretrain = null; return; }
  const seen = { epoch: p.epoch, t: s.updated_at, total: p.total };
  const P = S.pretrain;
  if (!P || p.epoch < P.last.epoch || p.total !== P.last.total) S.pretrain = { first: seen, last: seen, updates: 1 };
  else if (p.epoch > P.last.epoch) { P.last = seen; P.updates += 1; }
}

function pretrainLeft(p) {
  const P = S.pretrain;
  if (!P || P.updates < 2 || P.last.t <= P.first.t) return "";
  const perEpoch = (P.last.t - P.first.t) / (P.last.epoch - P.first.epoch);
  const s = Math.max(0, (p.total - p.epoch) * perEpoch);
  if (s < 90) return "about a minute left";
  if (s < 5400) return `about ${Math.round(s / 60)} min left`;
  return `about ${(s / 3600).toFixed(1)} h left`;
}

function isStale(st) {
  const s = st.status;
  if (!s || s.phase === "finished" || st.status_age_s === null || st.status_age_s === undefined) return false;
  let after = 60;
  if (s.phase === "pretraining reward model") {
    const P = S.pretrain;
    after = P && P.updates >= 2 && P.last.t > P.first.t ? Math.max(60, 2.5 * (P.last.t - P.first.t) / (P.updates - 1) + 30)
      : 1800; // until its pace is known: pretraining reports every few epochs, which can take many minutes
  }
  return st.status_age_s > after;
}

function render() {
  const st = S.state;
  const labeling = !!S.cur;
  document.body.dataset.state = S.saving ? "saving" : labeling ? "labeling" : "empty";
  $("pair").dataset.queryId = labeling ? S.cur.q.id : "";
  for (const side of SIDES) $("clip-" + side).hidden = !labeling;
  $("empty").hidden = labeling;
  if (!labeling) {
    const [title, detail] = emptyMessage();
    $("empty-title").textContent = title;
    $("empty-detail").textContent = detail;
    $("frame").textContent = "";
  }
  const p = st && !labeling && st.status && st.status.phase === "pretraining reward model" && !S.ended && !S.offline
    ? pretrainProgress(st.status) : null;
  $("empty-progress").hidden = !p;
  if (p) $("empty-progress-bar").style.width = `${Math.min(100, (100 * p.epoch) / p.total)}%`;
  for (const b of document.querySelectorAll("button[data-answer]")) b.disabled = !labeling || S.saving || S.undoing;
  $("undo").disabled = !S.undo.length || S.saving || S.undoing || S.ended;
  $("pause-label").textContent = S.paused ? "Play" : "Pause";
  $("speed").value = String(S.speedIndex);
  $("speed-out").textContent = `${SPEEDS[S.speedIndex]}×`;
  $("by-you").textContent = fmt(S.done);
  if (!st) return;
  $("env").textContent = st.env_id;
  $("task").textContent = st.task; // text, never HTML: a run's --goal is shown as typed
  $("task-note").hidden = st.task_source !== "run";
  const problem = st.frames && st.frames.problem;
  $("frames-problem").hidden = !problem;
  if (problem) {
    $("frames-problem").textContent = `This run cannot draw its clips, so there are no pictures to compare: ${problem}. ` +
      "Answer \u201cCan't tell\u201d for pairs without pictures; once that is fixed, rerun the same command: the run resumes, and pairs it asks for from then on have pictures.";
  }
  const L = st.labels;
  $("answered").textContent = fmt(L.answered);
  $("budget").textContent = st.label_budget ? fmt(st.label_budget) : "no budget set";
  $("budget-bar").style.width = st.label_budget ? `${Math.min(100, (100 * L.answered) / st.label_budget)}%` : "0%";
  $("by-people").textContent = fmt(L.by_people);
  const mine = median(S.times);
  const parts = [];
  if (mine !== null) parts.push(`you ${mine.toFixed(1)} s`);
  if (L.seconds_per_label !== null) parts.push(`all ${L.seconds_per_label.toFixed(1)} s`);
  $("per-label").textContent = parts.length ? parts.join(" · ") : "—";
  $("waiting").textContent = fmt(L.pending_for_people);
  const s = st.status;
  const phase = $("phase");
  if (s) {
    phase.textContent = s.phase || "—";
    phase.dataset.phase = s.phase || "";
    $("steps").textContent = `${fmt(s.env_steps)} / ${fmt(s.total_steps)} env steps`;
    $("steps-bar").style.width = s.total_steps ? `${Math.min(100, (100 * s.env_steps) / s.total_steps)}%` : "0%";
    $("return").textContent = s.episode_return === null || s.episode_return === undefined
      ? "none finished yet" : Number(s.episode_return).toFixed(1);
    $("run-labels").textContent = `${fmt(s.labels_answered)} · ${fmt(s.labels_pending)} pending`;
    $("updated").textContent = ago(st.status_age_s);
    $("updated").classList.toggle("stale", isStale(st));
  } else {
    phase.textContent = "no status";
    phase.dataset.phase = "";
    $("steps").textContent = "The learner has not reported yet (no status.json).";
    $("steps-bar").style.width = "0%";
  }
}

let toastTimer = null;
function toast(text, kind) {
  const t = $("toast");
  t.textContent = text;
  t.className = kind;
  t.hidden = false;
  clearTimeout(toastTimer);
  if (kind !== "pending" && kind !== "err") toastTimer = setTimeout(() => { t.hidden = true; }, 2200);
}

// -- input ---------------------------------------------------------------------------------
function setSpeed(i) {
  S.speedIndex = Math.max(0, Math.min(SPEEDS.length - 1, i));
  toStorage(localStorage, "rlhp.speed", String(S.speedIndex));
  render();
}

function togglePause() {
  S.paused = !S.paused;
  render();
}

document.addEventListener("keydown", (e) => {
  if (e.target.closest && e.target.closest("input, textarea, select")) {
    if (e.key === "Enter" || e.key === "Escape") e.target.blur();
    if (e.target.type !== "range") return;
  }
  if ((e.ctrlKey || e.metaKey) && (e.key === "z" || e.key === "Z")) { e.preventDefault(); undo(); return; }
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  const answers = { ArrowLeft: "left", ArrowRight: "right", ArrowUp: "equal", ArrowDown: "incomparable" };
  if (answers[e.key]) {
    e.preventDefault();
    if (!e.repeat) answer(answers[e.key]);
    return;
  }
  switch (e.key) {
    case "z": case "Z": case "Backspace": case "u": case "U":
      e.preventDefault(); if (!e.repeat) undo(); break;
    case " ":
      e.preventDefault(); togglePause(); break;
    case "-": case "_": case "[":
      setSpeed(S.speedIndex - 1); break;
    case "+": case "=": case "]":
      setSpeed(S.speedIndex + 1); break;
    default:
  }
});

for (const b of document.querySelectorAll("button[data-answer]")) {
  b.addEventListener("click", () => answer(b.dataset.answer));
}
$("undo").addEventListener("click", () => undo());
$("pause").addEventListener("click", () => togglePause());
$("speed").addEventListener("input", (e) => setSpeed(Number(e.target.value)));
const nameInput = $("name");
nameInput.value = S.name;
nameInput.addEventListener("input", () => {
  S.name = nameInput.value.trim();
  toStorage(localStorage, "rlhp.labeler", S.name);
});
// Buttons keep no focus, so arrow keys and Space always mean the page's shortcuts.
for (const b of document.querySelectorAll("button")) b.addEventListener("mouseup", () => b.blur());
$("export").addEventListener("click", async (e) => {
  if (!S.token) return; // the cookie set from ?token= covers plain downloads
  e.preventDefault();
  const r = await fetch("/api/export.csv", { headers: { "X-RLHP-Token": S.token } });
  const blob = await r.blob();
  const a = Object.assign(document.createElement("a"), { href: URL.createObjectURL(blob), download: "labels.csv" });
  a.click();
  URL.revokeObjectURL(a.href);
});
window.addEventListener("resize", layout);

render();
poll();
setInterval(poll, STATE_EVERY_MS);
setInterval(renew, RENEW_EVERY_MS);
requestAnimationFrame(tick);
