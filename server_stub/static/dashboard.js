// Live dashboard of the LPR server stub: initial state over REST, then live
// updates over Socket.IO (rooms "dashboard" and "health_monitoring").
// Charts: charts.js; plate search and history: /api/search, /api/stats/*.
"use strict";
(function () {
  const params = new URLSearchParams(window.location.search);
  const token = params.get("token");
  const MAX_ROWS = 50;
  const cameras = new Map();
  const shown = new Set();
  const $ = (id) => document.getElementById(id);

  // JSON API: the token goes in the Authorization header, never the URL.
  function api(path, query) {
    const headers = token ? { Authorization: "Bearer " + token } : {};
    const qs = query ? "?" + new URLSearchParams(query).toString() : "";
    return fetch(path + qs, { headers }).then((r) => r.json().then((body) => {
      if (!r.ok || body.success === false) throw new Error(body.message || ("HTTP " + r.status));
      return body;
    }));
  }
  // <img> cannot send headers, so the token travels in the query instead.
  function imgUrl(path) {
    return token ? path + "?token=" + encodeURIComponent(token) : path;
  }
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  // --- cameras --------------------------------------------------------------------
  function renderCameras() {
    const body = document.querySelector("#cameras tbody");
    body.replaceChildren();
    const sorted = [...cameras.values()].sort((a, b) => a.camera_id < b.camera_id ? -1 : 1);
    for (const cam of sorted) {
      const tr = el("tr");
      tr.dataset.camera = cam.camera_id;
      tr.append(el("td", null, cam.camera_id), el("td", null, cam.checkpoint_id));
      const st = el("td"); st.append(el("span", "badge " + (cam.status || "unknown"), cam.status));
      tr.append(st, el("td", null, cam.last_seen || "—"), el("td", null, cam.detection_count || 0));
      tr.append(missingCell(cam));
      const h = el("td");
      const hs = cam.health_status || "unknown";
      h.append(el("span", "badge " + hs, hs));
      if (cam.health_message) h.append(el("span", "meta", " " + cam.health_message));
      tr.append(h);
      body.append(tr);
    }
    fillCameraSelects(sorted.map((c) => c.camera_id));
  }

  // Gaps in the camera's own numbering (seq): readings dropped on the way or
  // still in its spool. Deployed cameras send no seq: nothing to show.
  function missingCell(cam) {
    const td = el("td", "missing");
    const parts = [];
    let numbered = false;
    for (const [kind, word] of [["detection", "detections"], ["health", "health"]]) {
      if (!cam[kind + "_last_seq"]) continue;
      numbered = true;
      const n = cam[kind + "_missing_seq"] || 0;
      if (n) parts.push(n + " " + word);
    }
    if (!numbered) td.textContent = "—";
    else if (!parts.length) td.textContent = "0";
    else td.append(el("span", "badge warning", parts.join(" · ")));
    return td;
  }

  function fillCameraSelects(ids) {
    for (const [id, first] of [["health-camera", null], ["search-camera", "all cameras"]]) {
      const select = $(id);
      const current = select.value;
      const have = [...select.options].map((o) => o.value).filter((v) => v);
      if (have.join("\n") === ids.join("\n")) continue;
      select.replaceChildren();
      if (first !== null || !ids.length) select.append(new Option(first || "(no camera yet)", ""));
      for (const cam of ids) select.append(new Option(cam, cam));
      // The health charts start on a camera that has reported its health.
      const reporting = ids.find((c) => ((cameras.get(c) || {}).health_status || "unknown") !== "unknown");
      select.value = ids.includes(current) ? current : (first !== null ? "" : reporting || ids[0] || "");
      if (id === "health-camera" && select.value !== current) loadHealth();
    }
  }

  // --- detections: list, detail dialog -------------------------------------------
  function detectionRow(d, fresh) {
    const row = el("div", "detection" + (fresh ? " fresh" : ""));
    row.dataset.detectionId = d.detection_id;
    const plates = el("div");
    for (const text of d.ocr_results || []) plates.append(el("span", "plate", text), " ");
    if (!(d.ocr_results || []).length) plates.append(el("span", "meta", "(no plate text)"));
    row.append(plates);
    for (const url of d.cropped_plate_urls || []) {
      const img = el("img", "crop"); img.src = imgUrl(url); img.alt = "plate crop";
      row.append(img);
    }
    row.append(el("div", "meta",
      d.camera_id + " @ " + d.checkpoint_id + " · " + d.timestamp +
      " · vehicles " + (d.vehicles_count || 0)));
    row.addEventListener("click", () => showDetail(d));
    return row;
  }

  function showDetail(d) {
    const plates = (d.ocr_results || []).join(", ") || "(no plate text)";
    $("detail-title").textContent = plates;
    $("detail-meta").textContent = d.camera_id + " @ " + d.checkpoint_id + " · seen " +
      d.timestamp + " · received " + (d.received_at || "—") + (d.channel ? " via " + d.channel : "") +
      " · vehicles " + (d.vehicles_count || 0) + " · id " + d.detection_id;
    const frame = $("detail-frame");
    if (d.annotated_image_url) {
      frame.hidden = false; $("detail-noframe").hidden = true;
      frame.src = imgUrl(d.annotated_image_url);
    } else {
      frame.hidden = true; frame.removeAttribute("src"); $("detail-noframe").hidden = false;
    }
    const crops = $("detail-crops");
    crops.replaceChildren();
    for (const url of d.cropped_plate_urls || []) {
      const img = el("img"); img.src = imgUrl(url); img.alt = "plate crop"; crops.append(img);
    }
    const dialog = $("detail");
    if (!dialog.open) dialog.showModal();
  }
  // A click on the backdrop (outside the dialog's box) closes it too.
  $("detail").addEventListener("click", (ev) => { if (ev.target === $("detail")) $("detail").close(); });

  function addDetection(d, fresh) {
    if (shown.has(d.detection_id)) return;
    shown.add(d.detection_id);
    const list = $("detections");
    list.prepend(detectionRow(d, fresh));
    // Forget what scrolled off too: a wall screen stays open for weeks.
    while (list.children.length > MAX_ROWS) {
      shown.delete(list.lastChild.dataset.detectionId);
      list.lastChild.remove();
    }
    if (fresh) dpm.add(d);
    const cam = cameras.get(d.camera_id);
    if (cam) {
      cam.detection_count = (cam.detection_count || 0) + (fresh ? 1 : 0);
      cam.last_seen = d.received_at || cam.last_seen;
      cam.status = "online";
    } else if (fresh) {
      cameras.set(d.camera_id, { camera_id: d.camera_id, checkpoint_id: d.checkpoint_id,
        status: "online", detection_count: 1, last_seen: d.received_at });
    }
    renderCameras();
  }

  // --- charts ---------------------------------------------------------------------
  const dpm = new LprCharts.DetectionsChart($("chart-dpm"));
  const health = new LprCharts.HealthCharts($("health-charts"));
  const windowSeconds = () => Number($("window").value);

  function loadDetections() {
    const until = Date.now() / 1000;
    return api("/api/stats/detections_per_minute", { since: until - windowSeconds(), until })
      .then((r) => dpm.load(r)).catch((e) => console.warn("detections per minute:", e));
  }
  function loadHealth() {
    const camera = $("health-camera").value;
    if (!camera) return Promise.resolve();
    const until = Date.now() / 1000 + 60;  // a camera clock slightly ahead still shows
    return api("/api/stats/health_history",
      { camera_id: camera, since: until - 60 - windowSeconds(), until })
      .then((r) => { if (r.camera_id === $("health-camera").value) health.load(r); })
      .catch((e) => console.warn("health history:", e));
  }
  let healthTimer = null;
  // Throttled: every component's report is its own message; one fetch serves them all.
  function loadHealthSoon() {
    if (healthTimer === null) healthTimer = setTimeout(() => { healthTimer = null; loadHealth(); }, 500);
  }
  $("window").addEventListener("change", () => { loadDetections(); loadHealth(); });
  $("health-camera").addEventListener("change", loadHealth);

  // --- search ---------------------------------------------------------------------
  let nextBefore = null;
  function searchQuery() {
    const q = { plate: $("search-plate").value.trim(), match: $("search-match").value, limit: 50 };
    for (const name of ["since", "until"]) {
      const v = $("search-" + name).value;  // local time, as the user typed it
      if (v) q[name] = new Date(v).getTime() / 1000;
    }
    if ($("search-camera").value) q.camera_id = $("search-camera").value;
    return q;
  }
  function runSearch(more) {
    const q = searchQuery();
    if (more && nextBefore !== null) q.before = nextBefore;
    const status = $("search-status");
    status.className = "meta"; status.textContent = "searching…";
    return api("/api/search", q).then((r) => {
      const list = $("search-results");
      if (!more) list.replaceChildren();
      for (const d of r.records) list.append(detectionRow(d, false));
      nextBefore = r.next_before;
      $("search-more").hidden = nextBefore === null;
      status.textContent = list.children.length + " found" + (nextBefore === null ? "" : " (more below)");
    }).catch((e) => { status.className = "meta error"; status.textContent = e.message; });
  }
  $("search-form").addEventListener("submit", (ev) => { ev.preventDefault(); runSearch(false); });
  $("search-more").addEventListener("click", () => runSearch(true));

  // --- header and periodic refresh ---------------------------------------------------
  let statsTimer = null;
  // Throttled: a busy camera must not turn every detection into a REST call.
  function refreshStatsSoon() {
    if (statsTimer === null) statsTimer = setTimeout(() => { statsTimer = null; refreshStats(); }, 1000);
  }
  function refreshStats() {
    api("/api/statistics").then((r) => {
      const s = r.data || {};
      $("stats").textContent =
        "detections " + s.total_detections + " · health " + s.total_health_checks +
        " · clients " + s.connected_clients;
    }).catch(() => {});
  }
  function refreshCameras() {
    api("/api/cameras").then((r) => {
      cameras.clear();
      for (const c of r.cameras || []) cameras.set(c.camera_id, c);
      renderCameras();
    }).catch(() => {});
    refreshStats();
  }

  refreshCameras();
  loadDetections().then(() =>
    api("/api/records", { limit: MAX_ROWS }).then((r) => {
      for (const rec of r.records || []) addDetection(rec, false);
    }).catch(() => {}));
  setInterval(refreshCameras, 5000);
  // Re-read the charts now and then: the window moves on, and events missed
  // while the socket was down are in the database.
  setInterval(() => { loadDetections(); loadHealth(); }, 60000);

  // auth.dashboard: in --legacy mode the stub skips its reference-compatible
  // `connect` event for us, which this client would reject as a parse error.
  const socket = io({ auth: { token: token, dashboard: true }, transports: ["websocket", "polling"] });
  const badge = $("conn");
  socket.on("connect", () => {
    badge.textContent = "live"; badge.className = "badge online";
    socket.emit("join_dashboard");
    socket.emit("join_health_room");
  });
  socket.on("disconnect", () => { badge.textContent = "disconnected"; badge.className = "badge offline"; });
  socket.on("connect_error", (err) => {
    badge.textContent = "cannot connect: " + err.message; badge.className = "badge error";
  });
  socket.on("new_detection", (d) => { addDetection(d, true); refreshStatsSoon(); });
  socket.on("camera_status", (c) => {
    const cam = cameras.get(c.camera_id) || { camera_id: c.camera_id, detection_count: 0 };
    cam.checkpoint_id = c.checkpoint_id; cam.status = c.status; cam.last_seen = c.timestamp;
    cameras.set(c.camera_id, cam);
    renderCameras();
  });
  socket.on("health_update", (h) => {
    const cam = cameras.get(h.camera_id) || { camera_id: h.camera_id,
      checkpoint_id: h.checkpoint_id, detection_count: 0, status: "online" };
    cam.health_status = h.status; cam.health_message = h.message;
    refreshStatsSoon();
    cameras.set(h.camera_id, cam);
    renderCameras();
    if (h.camera_id === $("health-camera").value) loadHealthSoon();
  });

  // For tests and the curious: the charts and their data.
  window.lprDashboard = { dpm, health, runSearch, showDetail };
})();
