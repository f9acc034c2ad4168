// CXR gateway console: upload, worklist and settings pages. Plain DOM, no build step.
// Every value from the server is inserted as text (textContent), never as HTML.
"use strict";

const FINDINGS = {
  "tb-suspected": "TB suspected",
  "pneumonia-pattern": "Pneumonia pattern (TB classifier positive, pneumonia favoured)",
  "no-tb-finding": "No TB finding",
};
const CLASSIFIERS = [["tb_vs_normal", "TB vs normal"], ["pneumonia_vs_tb", "Pneumonia vs TB"]];

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function showError(message) {
  const box = document.getElementById("error");
  box.textContent = message;
  box.hidden = !message;
}

async function api(path, options) {
  const response = await fetch(path, Object.assign({ credentials: "same-origin" }, options));
  const body = response.headers.get("content-type")?.includes("json") ? await response.json() : null;
  if (!response.ok) {
    const detail = body && body.detail ? body.detail : response.statusText;
    throw new Error(typeof detail === "string" ? detail : JSON.stringify(detail));
  }
  return body;
}

const pct = (x) => (x === null || x === undefined ? "" : (100 * x).toFixed(1) + " %");
const when = (t) => new Date(t * 1000).toLocaleString();

// ---- upload page
function showPrediction(result) {
  const finding = document.getElementById("finding");
  finding.textContent = FINDINGS[result.finding] || result.finding;
  finding.className = "finding " + result.finding;
  document.getElementById("image").src = result.image_url;
  document.getElementById("heatmap").src = result.heatmap_url || "";
  const body = document.querySelector("#scores tbody");
  body.replaceChildren();
  for (const [key, title] of CLASSIFIERS) {
    const s = result[key];
    const row = el("tr");
    row.dataset.classifier = key;
    for (const cell of [title, s.finding, pct(s.score), pct(s.threshold), s.model + " " + s.version]) {
      row.append(el("td", cell));
    }
    body.append(row);
  }
  const input = result.input;
  document.getElementById("input").textContent =
    `${input.kind.toUpperCase()} ${input.columns}x${input.rows}; quality gate: ${input.quality_gate}. ${result.notice}`;
  document.getElementById("result").hidden = false;
}

async function upload(file) {
  showError("");
  document.getElementById("result").hidden = true;
  const status = document.getElementById("status");
  status.textContent = `Analysing ${file.name}...`;
  const form = new FormData();
  form.append("file", file);
  try {
    showPrediction(await api("/api/v1/predict", { method: "POST", body: form }));
    status.textContent = `${file.name}: done.`;
  } catch (err) {
    status.textContent = "";
    showError(`${file.name}: ${err.message}`);
  }
}

function initUpload() {
  const drop = document.getElementById("drop");
  const input = document.getElementById("file");
  input.addEventListener("change", () => input.files.length && upload(input.files[0]));
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files.length) upload(e.dataTransfer.files[0]);
  });
}

// ---- worklist page
const worklist = { page: 1, pageSize: 25 };

function statusCell(study) {
  const cell = el("td");
  cell.append(el("span", study.status, "badge " + study.status));
  if (study.reason && (study.status === "skipped" || study.status === "failed")) {
    cell.append(el("div", study.reason, "reason"));
  }
  return cell;
}

function retryButton(study) {
  const cell = el("td");
  if (study.status !== "dead-letter") return cell;
  const button = el("button", "Retry", "retry");
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      await api(`/api/v1/studies/${encodeURIComponent(study.study_uid)}/retry`, { method: "POST" });
      await loadStudies();
    } catch (err) {
      showError(err.message);
      button.disabled = false;
    }
  });
  cell.append(button);
  return cell;
}

function studyRow(study) {
  const row = el("tr");
  row.dataset.uid = study.study_uid;
  const uid = el("td", study.study_uid, "uid");
  uid.style.cursor = "pointer";
  uid.addEventListener("click", () => loadDetail(study.study_uid));
  const deliveries = `${study.deliveries_delivered} delivered, ${study.deliveries_pending} pending, ` +
    `${study.deliveries_dead} dead`;
  row.append(el("td", when(study.last_received)), uid, el("td", study.images), statusCell(study),
    el("td", FINDINGS[study.finding] || ""), el("td", pct(study.tb_score)), el("td", deliveries),
    retryButton(study));
  return row;
}

async function loadStudies() {
  showError("");
  const params = new URLSearchParams({ page: worklist.page, page_size: worklist.pageSize,
    sort: document.getElementById("sort").value });
  const status = document.getElementById("status-filter").value;
  if (status) params.set("status", status);
  try {
    const body = await api("/api/v1/studies?" + params);
    document.querySelector("#studies tbody").replaceChildren(...body.items.map(studyRow));
    const pages = Math.max(1, Math.ceil(body.total / body.page_size));
    document.getElementById("count").textContent = `${body.total} studies`;
    document.getElementById("page").textContent = `page ${body.page} of ${pages}`;
    document.getElementById("prev").disabled = body.page <= 1;
    document.getElementById("next").disabled = body.page >= pages;
  } catch (err) {
    showError(err.message);
  }
}

function imageRow(image) {
  const result = image.result;
  const row = el("tr");
  row.append(el("td", image.sop_instance_uid, "uid"), el("td", image.state),
    el("td", result ? FINDINGS[result.finding] : image.reason || ""),
    el("td", result ? pct(result.tb_vs_normal.score) : ""));
  const link = el("td");
  if (image.heatmap_url) {
    const a = el("a", "heatmap");
    a.href = image.heatmap_url;
    a.target = "_blank";
    link.append(a);
  }
  row.append(link);
  return row;
}

function table(headers, rows) {
  const t = el("table");
  const head = el("tr");
  headers.forEach((h) => head.append(el("th", h)));
  t.append(el("thead"), el("tbody"));
  t.tHead.append(head);
  t.tBodies[0].append(...rows);
  return t;
}

async function loadDetail(uid) {
  try {
    const body = await api(`/api/v1/studies/${encodeURIComponent(uid)}`);
    const box = document.getElementById("detail");
    box.replaceChildren(el("h3", "Study " + uid));
    if (body.result) {
      box.append(el("p", `${FINDINGS[body.result.finding]}; TB score ${pct(body.result.tb_vs_normal.score)}` +
        ` (threshold ${pct(body.result.tb_vs_normal.threshold)}), ${body.result.tb_vs_normal.model} ` +
        body.result.tb_vs_normal.version));
    }
    box.append(table(["SOP Instance UID", "State", "Result / reason", "TB score", ""], body.images.map(imageRow)));
    const deliveries = (body.deliveries || []).map((d) => {
      const row = el("tr");
      [d.destination, d.kind, d.state, d.attempts, d.last_error || ""].forEach((v) => row.append(el("td", v)));
      return row;
    });
    box.append(el("h4", "Deliveries"), table(["Destination", "Object", "State", "Attempts", "Last error"], deliveries));
    box.hidden = false;
  } catch (err) {
    showError(err.message);
  }
}

function initWorklist() {
  document.getElementById("sort").addEventListener("change", () => { worklist.page = 1; loadStudies(); });
  document.getElementById("status-filter").addEventListener("change", () => { worklist.page = 1; loadStudies(); });
  document.getElementById("refresh").addEventListener("click", loadStudies);
  document.getElementById("prev").addEventListener("click", () => { worklist.page -= 1; loadStudies(); });
  document.getElementById("next").addEventListener("click", () => { worklist.page += 1; loadStudies(); });
  loadStudies();
}

// ---- settings page
function renderValue(value) {
  if (value === null || value === undefined) return el("span", "not set", "muted");
  if (Array.isArray(value)) {
    if (!value.length) return el("span", "none", "muted");
    const list = el("ul");
    value.forEach((v) => list.append(el("li", typeof v === "object" ? Object.entries(v)
      .map(([k, x]) => `${k}: ${x ?? "any"}`).join(", ") : v)));
    return list;
  }
  if (typeof value === "object") return table(["Setting", "Value"], Object.entries(value).map(([k, v]) => {
    const row = el("tr");
    const cell = el("td");
    cell.append(renderValue(v));
    row.append(el("td", k), cell);
    return row;
  }));
  return el("span", value);
}

async function initSettings() {
  try {
    const config = await api("/api/v1/config");
    const root = document.getElementById("config");
    for (const [name, section] of Object.entries(config)) {
      const box = el("section", undefined, "config");
      box.append(el("h3", name), renderValue(section));
      root.append(box);
    }
  } catch (err) {
    showError(err.message);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const page = document.body.dataset.page;
  if (page === "upload") initUpload();
  if (page === "worklist") initWorklist();
  if (page === "settings") initSettings();
});
