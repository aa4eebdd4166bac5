// Charts of the dashboard (vendored uPlot, see static/NOTICE): detections per
// minute per camera, and one camera's health over time. Data comes from
// /api/stats/*; live events then update the charts in place.
"use strict";
window.LprCharts = (function () {
  const PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2",
    "#db2777", "#65a30d", "#9333ea", "#ea580c"];
  // Numeric link state for the chart; the legend shows the words.
  const LINK_LEVEL = { connected: 2, rest: 1, disconnected: 0 };
  const LINK_WORD = ["disconnected", "rest", "connected"];
  const MAX_LINES = 10;  // detections chart: lines before the quieter cameras are summed

  // The stub's event time: the camera's timestamp (no offset = UTC, as SQLite
  // reads it on the server), else the arrival time.
  function eventTime(d) {
    for (const stamp of [d.timestamp, d.received_at]) {
      if (typeof stamp !== "string" || !/^\d{4}-/.test(stamp)) continue;
      const hasZone = /(Z|[+-]\d\d:?\d\d)$/.test(stamp);
      const ms = Date.parse(hasZone ? stamp : stamp + "Z");
      if (!Number.isNaN(ms)) return Math.floor(ms / 1000);
    }
    return Math.floor(Date.now() / 1000);
  }

  function widthOf(el) { return Math.max(300, el.clientWidth - 8); }

  function make(el, title, series, extra) {
    const opts = Object.assign({
      title: title,
      width: widthOf(el),
      height: 180,
      scales: { x: { time: true } },
      series: [{}].concat(series),
      legend: { live: true },
    }, extra || {});
    const data = [[]].concat(series.map(() => []));
    const chart = new uPlot(opts, data, el);
    window.addEventListener("resize", () => chart.setSize({ width: widthOf(el), height: 180 }));
    return chart;
  }

  // --- detections per minute ------------------------------------------------------
  class DetectionsChart {
    constructor(el) {
      this.el = el;
      this.chart = null;
      this.t = [];
      this.bucket = 60;
      this.cameras = new Map();  // line label -> counts aligned with this.t
      this.others = null;  // label of the line summing the quieter cameras, if any
      this.grouped = new Set();  // the cameras in that line
    }
    // A fleet has hundreds of cameras: the busiest get a line each, the rest
    // share one, so the chart and its legend stay readable.
    load(resp) {
      this.t = resp.t.slice();
      this.bucket = resp.bucket_s;
      const sum = (counts) => counts.reduce((a, b) => a + b, 0);
      const entries = Object.entries(resp.cameras).sort((a, b) => sum(b[1]) - sum(a[1]));
      const own = entries.length > MAX_LINES ? entries.slice(0, MAX_LINES - 1) : entries;
      const rest = entries.slice(own.length);
      this.cameras = new Map(own.sort((a, b) => a[0] < b[0] ? -1 : 1));
      this.grouped = new Set(rest.map(([cam]) => cam));
      this.others = null;
      if (rest.length) {
        this.others = "other cameras";
        this.cameras.set(this.others, this.t.map((_, i) => rest.reduce((a, [, c]) => a + c[i], 0)));
      }
      this.rebuild();
    }
    lineOf(camera) {
      if (this.cameras.has(camera)) return camera;
      if (this.grouped.has(camera)) return this.others;
      if (this.cameras.size < MAX_LINES) return camera;  // room for a line of its own
      if (this.others === null) this.others = "other cameras";
      this.grouped.add(camera);
      return this.others;
    }
    rebuild() {
      if (this.chart) this.chart.destroy();
      const series = [...this.cameras.keys()].map((cam, i) => ({
        label: cam, stroke: cam === this.others ? "#6b7280" : PALETTE[i % PALETTE.length],
        width: 2, points: { show: true, size: 4 },
      }));
      this.chart = make(this.el, "Detections per minute", series, {
        axes: [{}, { label: "per " + (this.bucket === 60 ? "minute" : this.bucket + " s") }],
      });
      this.draw();
    }
    draw() {
      this.chart.setData([this.t, ...this.cameras.values()]);
    }
    // One live detection: count it in its bucket, moving the window on if
    // the bucket is newer than the chart (the window keeps its length).
    add(d) {
      const n = this.t.length;
      if (!n) return;
      const b = this.bucket;
      let idx = Math.floor((eventTime(d) - this.t[0]) / b);
      if (idx < 0) return;  // older than the window: the chart does not show it
      if (idx >= n) {
        const shift = idx - n + 1;
        const start = this.t[0] + shift * b;
        this.t = Array.from({ length: n }, (_, i) => start + i * b);
        for (const [cam, counts] of this.cameras) {
          const kept = counts.slice(shift);
          this.cameras.set(cam, kept.concat(new Array(n - kept.length).fill(0)));
        }
        idx = n - 1;
      }
      const line = this.lineOf(d.camera_id);
      let counts = this.cameras.get(line);
      const fresh = !counts;
      if (fresh) {
        counts = new Array(n).fill(0);
        this.cameras.set(line, counts);
      }
      counts[idx] += 1;
      if (fresh) this.rebuild(); else this.draw();
    }
    points() {
      let n = 0;
      for (const counts of this.cameras.values()) for (const c of counts) n += c;
      return n;
    }
  }

  // --- one camera's health -------------------------------------------------------
  class HealthCharts {
    constructor(el) {
      this.el = el;
      el.replaceChildren();
      const box = (id) => { const d = document.createElement("div"); d.id = id; el.append(d); return d; };
      this.usage = make(box("chart-usage"), "CPU, memory, disk (%)", [
        { label: "CPU %", stroke: "#2563eb", width: 2, points: { show: true, size: 4 } },
        { label: "memory %", stroke: "#16a34a", width: 2, points: { show: true, size: 4 } },
        { label: "disk %", stroke: "#9ca3af", width: 1, points: { show: true, size: 3 } },
      ], { scales: { x: { time: true }, y: { range: [0, 100] } } });
      this.temp = make(box("chart-temp"), "Temperature (°C)", [
        { label: "°C", stroke: "#dc2626", width: 2, points: { show: true, size: 4 } },
      ]);
      this.spool = make(box("chart-spool"), "Spool backlog and link", [
        { label: "spool depth", stroke: "#d97706", width: 2, scale: "n",
          points: { show: true, size: 4 } },
        { label: "link", stroke: "#7c3aed", width: 2, scale: "link", paths: uPlot.paths.stepped({ align: 1 }),
          value: (u, v) => v === null || v === undefined ? "—" : LINK_WORD[v] },
      ], {
        scales: { x: { time: true }, n: {}, link: { range: [-0.2, 2.2] } },
        axes: [{}, { scale: "n", label: "readings" },
          { scale: "link", side: 1, size: 96, values: (u, vals) => vals.map((v) => LINK_WORD[v] || ""),
            splits: () => [0, 1, 2], grid: { show: false } }],
      });
      this.data = null;
    }
    load(resp) {
      this.data = resp;
      const t = resp.t;
      this.usage.setData([t, resp.cpu_usage, resp.memory_usage, resp.disk_usage]);
      this.temp.setData([t, resp.temperature_c]);
      const link = resp.link_state.map((s) => s in LINK_LEVEL ? LINK_LEVEL[s] : null);
      this.spool.setData([t, resp.spool_depth, link]);
    }
    points() { return this.data ? this.data.t.length : 0; }
  }

  return { DetectionsChart, HealthCharts, eventTime };
})();
