// Keeps the edgeclass pages live. The server renders every page complete; this only updates it.
"use strict";
(function () {
  const token = new URLSearchParams(location.search).get("token");
  const url = (path) => token ? path + (path.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token) : path;
  const $ = (id) => document.getElementById(id);
  const text = (id, value) => { const el = $(id); if (el && value !== undefined) el.textContent = value; };
  const fixed = (v, n) => (v === null || v === undefined) ? "–" : Number(v).toFixed(n);
  const page = document.body.dataset.page;

  async function getJSON(path) {
    const response = await fetch(url(path), { cache: "no-store" });
    if (!response.ok) throw new Error(path + ": " + response.status);
    return response.json();
  }

  function rows(tbody, pairs) {
    if (!tbody) return;
    tbody.replaceChildren(...pairs.map(([a, b]) => {
      const tr = document.createElement("tr");
      for (const value of [a, b]) { const td = document.createElement("td"); td.textContent = value; tr.append(td); }
      return tr;
    }));
  }

  function showDecision(d) {
    if (!d || d.label === undefined || d.label === null) return;
    text("label", d.label);
    text("score", fixed(d.score, 2));
    rows($("topk"), (d.top_k || []).map((t) => [t.label, fixed(t.score, 2)]));
    if (d.frame_size && d.crop) {
      const svg = $("crop"), box = $("crop-box");
      svg.setAttribute("viewBox", "0 0 " + d.frame_size[0] + " " + d.frame_size[1]);
      ["x", "y", "width", "height"].forEach((k, i) => box.setAttribute(k, d.crop[i]));
      svg.removeAttribute("hidden");
    }
  }

  async function pollLatest() {
    try { showDecision(await getJSON("/api/latest")); } catch (e) { /* no decision yet, or no model */ }
  }

  async function pollStatus() {
    try {
      const s = await getJSON("/api/status");
      text("fps", fixed(s.fps, 1));
      text("latency", s.latency_ms_p50 === undefined ? "–" : fixed(s.latency_ms_p50, 1) + " ms");
      text("backend", s.backend === undefined ? undefined : s.backend + " (" + s.interpreter + ")");
      text("source", s.source);
    } catch (e) { /* the device is restarting: keep the last figures */ }
  }

  async function pollMonitor() {
    if (!$("rates")) return;
    try {
      const m = await getJSON("/api/monitor");
      text("uncertain", (m.uncertain_rate * 100).toFixed(1) + "%");
      text("mean-top", fixed(m.mean_top_score, 2));
      rows($("rates"), Object.entries(m.label_rates_per_min).map(([k, v]) => [k, fixed(v, 1)]));
      $("alarm").hidden = !m.confidence_dropped;
    } catch (e) { /* keep the last figures */ }
  }

  function keepStreaming() {
    const img = $("stream");
    if (!img) return;
    img.addEventListener("error", () => setTimeout(() => { img.src = url("/stream.mjpg") + (token ? "&" : "?") + "t=" + Date.now(); }, 2000));
  }

  function live() {
    keepStreaming();
    if ($("label")) {
      const events = new EventSource(url("/api/events"));
      events.addEventListener("decision", (e) => showDecision(JSON.parse(e.data)));
      setInterval(pollLatest, 500);
    }
    setInterval(pollStatus, 2000);
    setInterval(pollMonitor, 5000);
  }

  async function post(path, body) {
    const response = await fetch(url(path), { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(data.error || response.statusText);
    return data;
  }

  function showCounts(counts) {
    document.querySelectorAll("button.save").forEach((b) => {
      const n = counts[b.dataset.label];
      if (n !== undefined) b.querySelector(".count").textContent = n;
    });
  }

  function collect() {
    live();
    const save = async (label) => {
      const burst = $("burst").checked;
      const body = { label: label, count: burst ? Number($("burst-count").value) : 1,
                     interval: burst ? Number($("burst-interval").value) : 0 };
      try {
        const r = await post("/api/collect", body);
        showCounts(r.counts);
        text("saved", r.saved.length ? "saved " + r.saved.join(", ") : "nothing saved");
      } catch (e) { text("saved", "not saved: " + e.message); }
    };
    document.querySelectorAll("button.save").forEach((b) => b.addEventListener("click", () => save(b.dataset.label)));
    document.addEventListener("keydown", (e) => {
      if (e.target.tagName === "INPUT" || e.ctrlKey || e.metaKey || e.altKey) return;
      const b = document.querySelector('button.save[data-key="' + e.key.toLowerCase() + '"]');
      if (b) { e.preventDefault(); save(b.dataset.label); }
    });
    setInterval(async () => { try { showCounts((await getJSON("/api/collect")).counts); } catch (e) {} }, 3000);
  }

  function review() {
    document.querySelectorAll("figure.card").forEach((card) => {
      const act = async (body) => {
        try { await post("/api/review", Object.assign({ stem: card.dataset.stem }, body)); card.remove(); }
        catch (e) { card.querySelector("figcaption").append(" " + e.message); }
      };
      card.querySelectorAll("button.sort").forEach((b) => b.addEventListener("click", () => act({ label: b.dataset.label })));
      card.querySelector("button.discard").addEventListener("click", () => act({ discard: true }));
    });
  }

  if (page === "live") live();
  if (page === "collect") collect();
  if (page === "review") review();
})();
