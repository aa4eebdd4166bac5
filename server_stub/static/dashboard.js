// Live dashboard of the LPR server stub: initial state over REST, then live
// updates over Socket.IO (rooms "dashboard" and "health_monitoring").
"use strict";
(function () {
  const params = new URLSearchParams(window.location.search);
  const token = params.get("token");
  const MAX_ROWS = 50;
  const cameras = new Map();
  const shown = new Set();

  function api(path) {
    const headers = token ? { Authorization: "Bearer " + token } : {};
    return fetch(path, { headers }).then((r) => r.json());
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

  function renderCameras() {
    const body = document.querySelector("#cameras tbody");
    body.replaceChildren();
    for (const cam of [...cameras.values()].sort((a, b) => a.camera_id < b.camera_id ? -1 : 1)) {
      const tr = el("tr");
      tr.dataset.camera = cam.camera_id;
      tr.append(el("td", null, cam.camera_id), el("td", null, cam.checkpoint_id));
      const st = el("td"); st.append(el("span", "badge " + (cam.status || "unknown"), cam.status));
      tr.append(st, el("td", null, cam.last_seen || "—"), el("td", null, cam.detection_count || 0));
      const h = el("td");
      const hs = cam.health_status || "unknown";
      h.append(el("span", "badge " + hs, hs));
      if (cam.health_message) h.append(el("span", "meta", " " + cam.health_message));
      tr.append(h);
      body.append(tr);
    }
  }

  function addDetection(d, fresh) {
    if (shown.has(d.detection_id)) return;
    shown.add(d.detection_id);
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
    const list = document.getElementById("detections");
    list.prepend(row);
    while (list.children.length > MAX_ROWS) list.lastChild.remove();
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

  let statsTimer = null;
  // Throttled: a busy camera must not turn every detection into a REST call.
  function refreshStatsSoon() {
    if (statsTimer === null) statsTimer = setTimeout(() => { statsTimer = null; refreshStats(); }, 1000);
  }
  function refreshStats() {
    api("/api/statistics").then((r) => {
      const s = r.data || {};
      document.getElementById("stats").textContent =
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
  api("/api/records?limit=" + MAX_ROWS).then((r) => {
    for (const rec of r.records || []) addDetection(rec, false);
  }).catch(() => {});
  setInterval(refreshCameras, 5000);

  // auth.dashboard: in --legacy mode the stub skips its reference-compatible
  // `connect` event for us, which this client would reject as a parse error.
  const socket = io({ auth: { token: token, dashboard: true }, transports: ["websocket", "polling"] });
  const badge = document.getElementById("conn");
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
  });
})();
