// reelstream live dashboard: plain JS against the gateway's own API (same origin), charts by Chart.js.
"use strict";

const $ = (sel) => document.querySelector(sel);
const POLL_LAG_MS = 2000;
const POLL_FRESH_MS = 3000;
const POLL_HEALTH_MS = 5000;
const RATE_POLL_MS = 50;       // after a rating: how often the list is re-read until its state version moves
const RATE_DEADLINE_MS = 15000;
const HISTORY = 90;            // chart points kept (one per lag sample)
const WINDOW_S = HISTORY * POLL_LAG_MS / 1000;  // the charts' time window

const ui = { user: null, list: null, arms: null, measured: null };

async function api(path, options) {
  const res = await fetch(path, options);
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(`${res.status} ${body.detail ? JSON.stringify(body.detail) : res.statusText}`);
  return body;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

// --- users and recommendations ----------------------------------------------------------------------

function recQuery() {
  const p = new URLSearchParams({ k: $("#k-input").value || "10" });
  if ($("#variant-select").value) p.set("variant", $("#variant-select").value);
  if ($("#segment-select").value) p.set("segment", $("#segment-select").value);
  return p.toString();
}

async function fetchList(uid) {
  return api(`/recommendations/${uid}?${recQuery()}`);
}

function renderList(list, previous) {
  ui.list = list;
  const before = new Set(previous ? previous.items.map((i) => i.movie_id) : []);
  const ol = $("#rec-list");
  ol.replaceChildren();
  for (const item of list.items) {
    const rate = el("span", { class: "rate", title: "rate this movie" });
    for (const stars of [1, 2, 3, 4, 5]) {
      rate.append(el("button", {
        type: "button", class: "rate-btn", "data-rating": stars, "data-movie-id": item.movie_id,
        onclick: () => rateMovie(item, stars),
      }, `${stars}★`));
    }
    const li = el("li", { class: "rec" + (previous && !before.has(item.movie_id) ? " new" : ""),
      "data-movie-id": item.movie_id },
      el("span", { class: "rec-title" }, item.title), rate, el("br"),
      el("span", { class: "rec-genres" }, `${item.genres.join(" · ")}  ·  score ${item.score.toFixed(2)}`), el("br"),
      el("span", { class: "rec-reasons" }, item.reasons.join("; ")));
    ol.append(li);
  }
  $("#rec-meta").textContent = `user ${list.user_id} · ${list.source}${list.degraded ? " (DEGRADED)" : ""}` +
    ` · segment ${list.segment} · variant ${list.variant} · rules ${list.rule_set} ${list.rules_version}` +
    ` · state version ${list.state_version} · model ${list.model_version}${list.cached ? " · cached" : ""}` +
    (list.exploration && list.exploration !== "none" ? ` · explored (${list.exploration})` : "");
  $("#rec-list").dataset.stateVersion = String(list.state_version);
  $("#rec-list").dataset.user = String(list.user_id);
}

async function loadUser(uid) {
  if (!uid) return;
  ui.user = Number(uid);
  $("#user-input").value = uid;
  $("#rate-status").textContent = "";
  try {
    const list = await fetchList(uid);
    if (ui.user !== Number(uid)) return;  // another user was picked meanwhile: theirs is shown
    renderList(list, null);
  } catch (e) {
    if (ui.user === Number(uid)) $("#rec-meta").textContent = `error: ${e.message}`;
    return;
  }
  loadProfile(uid);
}

async function loadProfile(uid) {
  const box = $("#profile");
  try {
    const p = await api(`/users/${uid}/profile`);
    const recent = p.recent.slice(0, 8).map((r) => `${r.title} ${r.rating}★`).join("; ");
    box.replaceChildren(
      el("p", {}, `${p.n_ratings} ratings, mean ${p.mean_rating == null ? "–" : p.mean_rating.toFixed(2)},` +
        ` segment ${p.segment}; top genres: ${p.top_genres.map(([g, n]) => `${g} (${n})`).join(", ")}`),
      el("p", { class: "meta" }, `recent: ${recent}`));
  } catch (e) {
    box.textContent = `no profile: ${e.message}`;
  }
}

async function rateMovie(item, stars) {
  const uid = ui.user;
  const before = ui.list;
  const status = $("#rate-status");
  status.classList.remove("flash");
  status.textContent = `rating "${item.title}" ${stars}★ …`;
  const t0 = performance.now();
  try {
    const sent = await api("/ratings", {
      method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify({ user_id: uid, movie_id: item.movie_id, rating: stars }),
    });
    status.textContent = `sent to partition ${sent.partition} offset ${sent.offset}; waiting for the worker …`;
    const deadline = t0 + RATE_DEADLINE_MS;
    for (;;) {
      const list = await fetchList(uid);
      if (list.state_version !== before.state_version) {
        const ms = performance.now() - t0;
        renderList(list, before);
        status.textContent = `"${item.title}" ${stars}★ applied: list updated in ${ms.toFixed(0)} ms` +
          ` (state version ${before.state_version} → ${list.state_version})`;
        status.classList.add("flash");
        status.dataset.elapsedMs = String(Math.round(ms));
        loadProfile(uid);
        return;
      }
      if (performance.now() > deadline) throw new Error("not applied within 15 s (is a worker running?)");
      await new Promise((r) => setTimeout(r, RATE_POLL_MS));
    }
  } catch (e) {
    status.textContent = `rating failed: ${e.message}`;
  }
}

async function suggestUsers(prefix) {
  try {
    const { users } = await api(`/users?q=${encodeURIComponent(prefix)}&limit=20`);
    $("#user-suggestions").replaceChildren(...users.map((u) => el("option", { value: u })));
    return users;
  } catch (e) {
    return [];
  }
}

async function initUsers() {
  const users = await suggestUsers("");
  const picks = $("#user-picks");
  picks.replaceChildren(el("span", { class: "meta" }, "pick:"),
    ...users.slice(0, 16).map((u) => el("button", { type: "button", class: "ghost pick", "data-user": u,
      onclick: () => loadUser(u) }, u)));
  // a demo user's list from the start (a #user= in the address wins)
  if (users.length && !ui.user && !new URLSearchParams(location.hash.slice(1)).get("user")) loadUser(users[0]);
  try {
    ui.arms = await api("/rules/arms");
    for (const v of ui.arms.variants) $("#variant-select").append(el("option", { value: v }, v));
    for (const s of ui.arms.segments) $("#segment-select").append(el("option", { value: s }, s));
  } catch (e) { /* rules unavailable: the switchers stay on "user's own" */ }
}

// --- charts -------------------------------------------------------------------------------------------

const PALETTE = ["#2f6fde", "#d64545", "#1f9d55", "#d69e2e", "#a23dbf", "#0f9fb5", "#6b7385", "#e8590c",
  "#364fc7", "#c2255c", "#2b8a3e", "#f08c00", "#862e9c", "#0b7285", "#495057", "#5c940d"];

function lineChart(canvas, yTitle) {
  return new Chart(canvas, {
    type: "line",
    data: { labels: [], datasets: [] },
    options: {
      animation: false, responsive: true, maintainAspectRatio: false, parsing: false, normalized: true,
      interaction: { mode: "nearest", intersect: false },
      scales: { x: { type: "linear", min: -WINDOW_S, max: 0, title: { display: true, text: "seconds ago" },
                     ticks: { callback: (v) => `${Math.round(-v)}` } },
                y: { beginAtZero: true, title: { display: true, text: yTitle } } },
      plugins: { legend: { labels: { boxWidth: 10, font: { size: 10 } } } },
      elements: { point: { radius: 0 }, line: { borderWidth: 1.5 } },
    },
  });
}

const charts = {};
const series = { lag: new Map(), rate: new Map() };
window.reelstream = { charts, series };  // for the browser test and the console

function pushSeries(map, key, t, y) {
  if (!map.has(key)) map.set(key, []);
  const arr = map.get(key);
  arr.push({ t, y });
  while (arr.length > HISTORY) arr.shift();
}

function drawMap(chart, map) {
  const now = Date.now() / 1000;
  const keys = [...map.keys()].sort((a, b) => a.localeCompare(b, undefined, { numeric: true }));
  chart.data.datasets = keys.map((k, i) => ({
    label: k, borderColor: PALETTE[i % PALETTE.length], backgroundColor: PALETTE[i % PALETTE.length],
    data: map.get(k).map((p) => ({ x: p.t - now, y: p.y })),
  }));
  chart.update("none");
}

async function pollLag() {
  try {
    const lag = await api("/lag");
    const badge = $("#lag-verdict");
    badge.textContent = `${lag.verdict} · ${lag.total_lag.toLocaleString()} behind`;
    badge.className = `badge ${lag.verdict}`;
    $("#lag-meta").textContent = `group ${lag.group}, sample ${lag.age_s.toFixed(1)} s old`;
    const topics = [...new Set(lag.partitions.map((p) => p.topic))];  // ratings first, then movies (GET /lag order)
    const role = (topic) => (topics.indexOf(topic) === 0 ? "ratings" : "movies");
    const tbody = $("#lag-table tbody");
    tbody.replaceChildren(...lag.partitions.map((p) => el("tr", {},
      el("td", { title: p.topic }, role(p.topic)), el("td", {}, p.partition), el("td", {}, p.committed.toLocaleString()),
      el("td", {}, p.end.toLocaleString()), el("td", {}, p.lag.toLocaleString()), el("td", {}, p.lag_seconds.toFixed(1)),
      el("td", {}, p.rate == null ? "—" : p.rate.toFixed(1)), el("td", {}, el("span", { class: `badge ${p.verdict}` }, p.verdict)))));
    for (const p of lag.partitions) {
      if (role(p.topic) === "movies" && p.end === 0) continue;  // idle movie partitions would crowd the legend
      const key = role(p.topic) === "movies" ? `movies p${p.partition}` : `p${p.partition}`;
      pushSeries(series.lag, key, lag.at, p.lag);
      if (p.rate != null) pushSeries(series.rate, key, lag.at, p.rate);  // null: one sample, no rate yet
    }
    drawMap(charts.lag, series.lag);
    drawMap(charts.rate, series.rate);
  } catch (e) {
    $("#lag-verdict").textContent = "unavailable";
    $("#lag-verdict").className = "badge";
    $("#lag-meta").textContent = e.message;
  }
}

async function pollFreshness() {
  try {
    const f = await api("/freshness?last=120");
    const pc = f.percentiles_ms;
    const workers = Object.entries(f.workers).map(([n, w]) => `${n} p50 ${w.p50} ms p99 ${w.p99} ms`).join("; ");
    $("#fresh-meta").textContent = pc.p50_ms == null
      ? (f.error || "no probe yet")
      : `probe p50 ${pc.p50_ms.toFixed(0)} ms · p95 ${pc.p95_ms.toFixed(0)} ms · p99 ${pc.p99_ms.toFixed(0)} ms` +
        ` · lost ${f.lost}${workers ? " · workers: " + workers : ""}`;
    const now = Date.now() / 1000;
    charts.fresh.data.datasets = [{
      label: "probe: produce → visible in Redis (ms)", borderColor: "#2f6fde", backgroundColor: "#2f6fde",
      data: f.recent.map((r) => ({ x: r.at - now, y: r.seconds * 1000 })), pointRadius: 2,
    }];
    charts.fresh.update("none");
  } catch (e) {
    $("#fresh-meta").textContent = e.message;
  }
}

async function pollHealth() {
  try {
    const h = await api("/health");
    const pills = ["broker", "redis", "worker", "model", "rules"].map((k) =>
      el("span", { class: `pill ${h[k].ok ? "ok" : "bad"}`, title: h[k].detail }, k));
    const c = h.challenger;  // drift alarms and hit-rate falls (rs:challenger): a retrain is due while pending
    if (c && c.pending > 0) {
      pills.push(el("span", { class: "pill bad", title: `${c.reason || "drift"}; run reelstream retrain` },
        `challenger requested (${c.pending})`));
    } else if (c && c.requested > 0) {
      pills.push(el("span", { class: "pill ok", title: c.answer || "" }, `alarms answered (${c.requested})`));
    }
    const r = h.hit_rate;  // the live hit-rate watch (monitoring/hit_rate.py)
    if (r && r.recent_rate != null) {
      pills.push(el("span", { class: `pill ${r.fell ? "bad" : "ok"}`, title: r.reason },
        `hit rate ${(100 * r.recent_rate).toFixed(1)} % (before ${(100 * r.baseline_rate).toFixed(1)} %)`));
    }
    $("#health").replaceChildren(...pills);
  } catch (e) {
    $("#health").replaceChildren(el("span", { class: "pill bad" }, "gateway"));
  }
}

// --- A/B arms ---------------------------------------------------------------------------------------

function exploreLabel(bySegment) {
  const kinds = Object.values(bySegment);  // in segment order: new, casual, heavy
  return new Set(kinds).size === 1 ? kinds[0] : kinds.join(" / ");
}

async function pollArms() {
  try {
    const [arms, stats, exp] = await Promise.all([api("/rules/arms"), api("/stats"),
      api("/experiments").catch(() => ({ arms: [] }))]);  // measured outcomes: the worker's attribution
    const total = arms.arms.reduce((s, a) => s + a.weight, 0) || 1;
    const served = stats.recommendations_by_variant;
    const explored = stats.explored_by_variant || {};
    const pts = (x) => (x == null ? "?" : (100 * x).toFixed(2));
    const measured = (name) => exp.arms.find((e) => e.variant === name);
    $("#arms-table tbody").replaceChildren(...arms.arms.map((a) => {
      const m = measured(a.name);
      return el("tr", { "data-variant": a.name },
        el("td", {}, a.name), el("td", {}, `${(100 * a.weight / total).toFixed(0)} %`),
        el("td", {}, exploreLabel(a.exploration)), el("td", { class: "served" }, (served[a.name] || 0).toLocaleString()),
        el("td", {}, (explored[a.name] || 0).toLocaleString()),
        el("td", { class: "hit-rate" }, m ? `${pts(m.hit_rate)} % of ${m.impressions.toLocaleString()}` : "—"),
        el("td", { class: "lift" }, m && m.diff != null ? `${pts(m.diff)} [${pts(m.low)}, ${pts(m.high)}]` : "—"),
        el("td", { class: "novelty" }, m && m.novelty != null ? `${m.novelty.toFixed(2)} bits` : "—"),
        el("td", { class: "verdict" }, m ? m.verdict : "—"));
    }));
    const control = exp.arms.find((e) => e.verdict === "control");
    const rivals = exp.arms.filter((e) => e.verdict !== "control" && e.relative != null && e.low != null);
    ui.measured = control && control.hit_rate > 0 && rivals.length
      ? { arm: rivals.reduce((a, b) => (b.relative > a.relative ? b : a)), base: control.hit_rate } : null;
    updateBusiness();
    $("#arms-meta").textContent = `rules ${arms.rule_set} ${arms.rules_version}; lists served since the gateway ` +
      "started; hit rate and lift (points, 95% interval) attributed by the worker";
  } catch (e) {
    $("#arms-meta").textContent = e.message;
  }
}

const OFFLINE_COLS = [["arm", "arm"], ["hr", "HR@20"], ["ndcg", "NDCG@20"], ["coverage", "coverage"],
  ["novelty", "novelty"], ["diversity", "diversity"]];

function showOffline(doc) {
  const exploit = doc.arms.find((r) => r.kind === "none");
  const cell = (r, key) => {
    if (key === "arm") return r.arm;
    const v = fmt(r[key]);
    if (!exploit || r === exploit) return v;
    const d = r[key] - exploit[key];
    return `${v} (${d >= 0 ? "+" : ""}${d.toPrecision(2)})`;
  };
  $("#arms-offline").replaceChildren(el("table", { class: "grid", id: "arms-offline-table" },
    el("tr", {}, ...OFFLINE_COLS.map(([, title]) => el("th", {}, title))),
    ...doc.arms.map((r) => el("tr", { "data-arm": r.arm }, ...OFFLINE_COLS.map(([key]) => el("td", {}, cell(r, key)))))));
  const events = doc.arms.length ? doc.arms[0].events.toLocaleString() : "0";
  $("#arms-offline-meta").textContent = `prequential STREAMING, ${events} events, model ${doc.model_version},` +
    ` ${doc.created_at}; in brackets: the difference to exploit`;
}

async function initOffline(reports) {
  if (!reports.includes("exploration")) {  // asked only when it exists: a 404 would log a console error
    $("#arms-offline").textContent = "no offline report yet: run `reelstream explore-eval`";
    return;
  }
  try {
    showOffline(await api("/reports/exploration"));
  } catch (e) {
    $("#arms-offline").textContent = e.message;
  }
}

// --- reports --------------------------------------------------------------------------------------

function isScalar(v) { return v === null || ["string", "number", "boolean"].includes(typeof v); }

function fmt(v) { return typeof v === "number" && !Number.isInteger(v) ? v.toPrecision(4) : String(v); }

function tableOf(rows) {
  const cols = [...new Set(rows.flatMap((r) => Object.keys(r).filter((k) => isScalar(r[k]))))].slice(0, 12);
  return el("table", { class: "grid" }, el("tr", {}, ...cols.map((c) => el("th", {}, c))),
    ...rows.slice(0, 60).map((r) => el("tr", {}, ...cols.map((c) => el("td", {}, r[c] === undefined ? "" : fmt(r[c]))))));
}

function summarise(doc) {
  const out = [];
  const scalars = Object.entries(doc).filter(([, v]) => isScalar(v));
  if (scalars.length) {
    out.push(el("table", { class: "grid kv" }, ...scalars.map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, fmt(v))))));
  }
  for (const [k, v] of Object.entries(doc)) {
    if (Array.isArray(v) && v.length && v.every((r) => r && typeof r === "object" && !Array.isArray(r))) {
      out.push(el("h3", {}, k), tableOf(v));
    } else if (v && typeof v === "object" && !Array.isArray(v)) {
      const inner = Object.entries(v);
      if (inner.length && inner.every(([, x]) => x && typeof x === "object" && !Array.isArray(x))) {
        out.push(el("h3", {}, k), tableOf(inner.map(([name, x]) => ({ name, ...x }))));
      } else if (inner.length && inner.every(([, x]) => isScalar(x))) {
        out.push(el("h3", {}, k), tableOf([v]));
      }
    }
  }
  return out;
}

async function showReport(name) {
  if (!name) return;
  try {
    const doc = await api(`/reports/${encodeURIComponent(name)}`);
    $("#report-summary").replaceChildren(...summarise(doc));
    $("#report-json").textContent = JSON.stringify(doc, null, 2);
  } catch (e) {
    $("#report-summary").textContent = e.message;
  }
}

async function initReports() {
  try {
    const { reports } = await api("/reports");
    const main = reports.filter((r) => !/\d{8}T\d{6}$/.test(r));  // time-stamped copies last
    const ordered = [...main, ...reports.filter((r) => !main.includes(r))];
    $("#report-select").replaceChildren(...ordered.map((r) => el("option", { value: r }, r)));
    if (!ordered.length) $("#report-summary").textContent = "no reports yet (bootstrap writes quality, evaluate writes evaluation)";
    showReport(ordered[0]);
    initOffline(reports);
  } catch (e) {
    $("#report-summary").textContent = e.message;
  }
}

// --- business impact ---------------------------------------------------------------------------

function money(x) { return x.toLocaleString(undefined, { style: "currency", currency: "USD", maximumFractionDigits: 0 }); }

function updateBusiness() {
  const users = Number($("#biz-users").value) || 0;
  const arpu = Number($("#biz-arpu").value) || 0;
  const lift = (Number($("#biz-lift").value) || 0) / 100;
  const base = users * arpu * 12;
  $("#biz-base").textContent = money(base);
  $("#biz-with").textContent = money(base * (1 + lift));
  $("#biz-gain").textContent = money(base * lift);
  const m = ui.measured;
  if (m) {  // relative lift and its interval: the difference's interval over the control's rate
    const pct = (x) => `${(100 * x).toFixed(1)} %`;
    const lo = m.arm.low / m.base, hi = m.arm.high / m.base;
    $("#biz-measured").textContent = `${m.arm.variant}: ${pct(m.arm.relative)} (95%: ${pct(lo)} .. ${pct(hi)}), ` +
      `${m.arm.verdict}, ${m.arm.impressions.toLocaleString()} lists`;
    $("#biz-measured-gain").textContent = `${money(base * m.arm.relative)} (${money(base * lo)} .. ${money(base * hi)})`;
  }
}

// --- start ----------------------------------------------------------------------------------------

function start() {
  charts.lag = lineChart($("#lag-chart"), "messages behind");
  charts.rate = lineChart($("#rate-chart"), "messages / s");
  charts.fresh = lineChart($("#fresh-chart"), "ms");
  $("#user-form").addEventListener("submit", (ev) => { ev.preventDefault(); loadUser($("#user-input").value.trim()); });
  $("#user-input").addEventListener("input", (ev) => suggestUsers(ev.target.value.trim()));
  for (const id of ["#variant-select", "#segment-select"]) {
    $(id).addEventListener("change", () => { if (ui.user) loadUser(ui.user); });
  }
  $("#report-select").addEventListener("change", (ev) => showReport(ev.target.value));
  $("#biz-form").addEventListener("input", updateBusiness);
  updateBusiness();
  initUsers();
  initReports();
  pollHealth(); pollLag(); pollFreshness(); pollArms();
  setInterval(pollHealth, POLL_HEALTH_MS);
  setInterval(pollArms, POLL_HEALTH_MS);
  setInterval(pollLag, POLL_LAG_MS);
  setInterval(pollFreshness, POLL_FRESH_MS);
  const fromHash = new URLSearchParams(location.hash.slice(1)).get("user");
  if (fromHash) loadUser(fromHash);
}

document.addEventListener("DOMContentLoaded", start);
