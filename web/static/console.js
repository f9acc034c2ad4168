// CXR gateway console: upload, worklist and settings pages. Plain DOM, no build step.
// Every value from the server is inserted as text (textContent), never as HTML.
"use strict";

const FINDINGS = {
  "tb-suspected": "TB suspected",
  "pneumonia-pattern": "TB suspected",  // stored by older versions; the server's impression rules
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

// A score is shown against its threshold ("0.540, threshold 0.120"), never as a percentage a
// reader would take for a probability of disease.
const num = (x) => (x === null || x === undefined ? "" : Number(x).toFixed(3));
const against = (score, threshold) =>
  score === null || score === undefined ? "" : `${num(score)}, threshold ${num(threshold)}`;
// The server's impression (one rule for SR, ORU and console); the finding's name for older rows.
const impressionOf = (r) => r.impression || FINDINGS[r.finding] || r.finding || "";
const when = (t) => new Date(t * 1000).toLocaleString();

// ---- upload page
function showPrediction(result) {
  const finding = document.getElementById("finding");
  finding.textContent = impressionOf(result);
  finding.className = "finding " + result.finding;
  document.getElementById("image").src = result.image_url;
  document.getElementById("heatmap").src = result.heatmap_url || "";
  const body = document.querySelector("#scores tbody");
  body.replaceChildren();
  for (const [key, title] of CLASSIFIERS) {
    const s = result[key];
    const row = el("tr");
    row.dataset.classifier = key;
    for (const cell of [title, s.finding, num(s.score), num(s.threshold), s.model + " " + s.version]) {
      row.append(el("td", cell));
    }
    body.append(row);
  }
  const input = result.input;
  document.getElementById("input").textContent =
    `${input.kind.toUpperCase()} ${input.columns}x${input.rows}; quality gate: ${input.quality_gate}. ${result.notice}`;
  const notes = document.getElementById("notes");
  notes.textContent = (result.notes || []).join("; ");
  notes.hidden = !notes.textContent;
  document.getElementById("result").hidden = false;
}

async function upload(file) {
  showError("");
  document.getElementById("result").hidden = true;
  const status = document.getElementById("status");
  status.textContent = `Analysing ${file.name}...`;
  const form = new FormData();
  form.append("file", file);
  const age = document.getElementById("age").value.trim();
  if (age) form.append("age_years", age);
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

function impressionCell(study) {
  const cell = el("td", impressionOf(study), "impression");
  for (const note of study.notes || []) cell.append(el("div", note, "note"));
  return cell;
}

function studyRow(study) {
  const row = el("tr");
  row.dataset.uid = study.study_uid;
  row.dataset.tbScore = study.tb_score ?? "";
  const uid = el("td", study.study_uid, "uid");
  uid.style.cursor = "pointer";
  uid.addEventListener("click", () => loadDetail(study.study_uid));
  const deliveries = `${study.deliveries_delivered} delivered, ${study.deliveries_pending} pending, ` +
    `${study.deliveries_dead} dead`;
  const p = study.patient || {};
  row.append(el("td", when(study.last_received)), el("td", p.patient_id, "patient-id"),
    el("td", p.patient_name, "patient-name"), el("td", p.accession_number, "accession"),
    el("td", p.study_date, "study-date"), el("td", p.modality, "modality"), statusCell(study),
    impressionCell(study), el("td", against(study.tb_score, study.tb_threshold), "tb-score"),
    el("td", against(study.pneumonia_score, study.pneumonia_threshold), "pneumonia-score"),
    el("td", study.images), el("td", deliveries), uid, retryButton(study));
  return row;
}

async function loadStudies() {
  showError("");
  const params = new URLSearchParams({ page: worklist.page, page_size: worklist.pageSize,
    sort: document.getElementById("sort").value });
  const status = document.getElementById("status-filter").value;
  if (status) params.set("status", status);
  const finding = document.getElementById("finding-filter").value;
  if (finding) params.set("finding", finding);
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
    el("td", result ? [impressionOf(result), ...(result.notes || [])].join("; ") : image.reason || ""),
    el("td", result ? against(result.tb_vs_normal.score, result.tb_vs_normal.threshold) : ""));
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
      const tb = body.result.tb_vs_normal;
      box.append(el("p", `${impressionOf(body.result)}; TB score ${against(tb.score, tb.threshold)}, ` +
        `${tb.model} ${tb.version}`));
      for (const note of body.result.notes || []) box.append(el("p", note, "note"));
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
  document.getElementById("finding-filter").addEventListener("change", () => { worklist.page = 1; loadStudies(); });
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
