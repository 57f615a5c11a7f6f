// PanDerm serve page: upload an image, show every class's probability as a bar,
// or a "Not assessable" panel when the image fails the quality or out-of-distribution gate.
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  // last: the latest prediction; forced: the user asked to see a not-assessable image's probabilities.
  // seq: number of the latest upload, so a slower earlier answer cannot overwrite a later one.
  const state = { maxMb: 10, last: null, forced: false, seq: 0 };

  function headers() {
    const t = $("token").value.trim() || sessionStorage.getItem("pandermToken") || "";
    return t ? { "X-Panderm-Token": t } : {};
  }

  function showError(msg) {
    const box = $("error");
    box.textContent = msg;
    box.hidden = !msg;
  }

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  async function loadModel() {
    try {
      const r = await fetch("/api/v1/model", { headers: headers() });
      if (r.status === 401) { $("token-box").hidden = false; $("model-name").textContent = "(token required)"; return; }
      const m = await r.json();
      if (!r.ok) { showError(m.error || "cannot load model information"); return; }
      $("model-name").textContent = m.name;
      $("card-text").textContent = m.card || "(no model card)";
      state.maxMb = m.max_upload_mb || state.maxMb;
    } catch (e) {
      showError("server not reachable");
    }
  }

  function renderBars(res) {
    const list = $("bars");
    list.replaceChildren();
    const malignant = new Set(res.malignant || []);
    const desc = res.descriptions || {};
    res.classes.forEach((c, i) => {
      const p = res.probabilities[i];
      const isTop = i === 0;
      const isMal = malignant.has(c);
      const row = el("li", "row" + (isTop ? " top" : ""));
      row.dataset.class = c;
      const label = el("div", "label");
      label.append(el("span", "name", c));
      if (isMal) label.append(el("span", "tag malignant", "malignant"));
      if (desc[c]) label.append(el("span", "desc", desc[c]));
      const track = el("div", "track");
      const bar = el("div", "bar" + (isTop ? " top" : "") + (isMal ? " malignant" : ""));
      bar.dataset.p = String(p);
      bar.dataset.class = c;
      bar.style.width = (100 * p).toFixed(2) + "%";
      bar.title = c + ": " + (100 * p).toFixed(1) + "%";
      track.append(bar);
      row.append(label, track, el("span", "pct", (100 * p).toFixed(1) + "%"));
      list.append(row);
    });
    const t = res.top;
    const top = $("top");
    top.replaceChildren(el("span", "", "Highest estimate: "), el("strong", "", t.class + " " +
      (100 * t.probability).toFixed(1) + "%"));
    if (t.description) top.append(el("span", "", " — " + t.description));
    if (t.malignant) top.append(el("span", "tag malignant", "malignant"));
  }

  // A response without an "ood" verdict (an older server) counts as assessable.
  function assessable(res) {
    return !res.ood || res.ood.in_distribution !== false;
  }

  // The bars, top line and similar cases of state.last: shown when it is assessable or on request.
  function renderEstimates() {
    const res = state.last;
    const ok = !res || assessable(res);
    const show = Boolean(res) && (ok || state.forced);
    if (show) {
      renderBars(res);
      renderNeighbours(res);
    } else {
      $("bars").replaceChildren();
      $("top").replaceChildren();
      $("similar").replaceChildren();
      $("similar-section").hidden = true;
    }
    const marked = show && !ok;  // shown on request: mark the bars and the similar cases alike
    $("forced-banner").hidden = !marked;
    $("similar-forced").hidden = !marked;
    $("results").classList.toggle("forced", marked);
    $("similar-section").classList.toggle("forced", marked);
    const btn = $("show-anyway");
    btn.setAttribute("aria-expanded", String(marked));
    btn.textContent = marked ? "Hide probabilities" : "Show probabilities anyway";
  }

  // The gate panel (reasons) or the "checks passed" line; rebuilt only for a new answer, so the
  // alert is announced once and not again on "show anyway".
  function renderGate() {
    const res = state.last;
    const ok = !res || assessable(res);
    $("gate").hidden = ok;
    $("gate-reasons").replaceChildren();
    if (res && !ok) {
      const reasons = (res.ood.reasons && res.ood.reasons.length) ? res.ood.reasons
        : ["the image did not pass the server's checks"];
      const sentence = (r) => { const t = String(r); return t.charAt(0).toUpperCase() + t.slice(1); };
      $("gate-reasons").append(...reasons.map((r) => el("li", "", sentence(r))));
    }
    const line = $("gate-ok");
    line.hidden = !(res && ok && res.ood);
    if (!line.hidden) {
      line.textContent = res.ood.score === null || res.ood.score === undefined
        ? "Image-quality checks passed; this classifier has no out-of-distribution gate"
        : "Image checks passed (quality and out-of-distribution gate)";
    }
    $("bars-hint").hidden = Boolean(res);
  }

  // A new answer (or none, while uploading): "show anyway" starts off again.
  function showAnswer(res) {
    state.last = res;
    state.forced = false;
    renderGate();
    renderEstimates();
  }

  function renderNeighbours(res) {
    const sec = $("similar-section");
    const box = $("similar");
    box.replaceChildren();
    const items = res.neighbours || [];
    sec.hidden = items.length === 0;
    items.forEach((n) => {
      const card = el("figure", "case");
      card.style.margin = "0";
      let img;
      if (typeof n.thumbnail === "string" && n.thumbnail.startsWith("data:image/")) {
        img = el("img");
        img.src = n.thumbnail;
        img.alt = n.label;
      } else {
        img = el("div", "noimg", "image not shown");
      }
      const cap = el("figcaption");
      cap.append(el("div", "name", n.label));
      if (n.description) cap.append(el("div", "desc", n.description));
      cap.append(el("div", "sim", "similarity " + Number(n.similarity).toFixed(3)));
      card.append(img, cap);
      box.append(card);
    });
  }

  async function upload(file) {
    showError("");
    if (!file) return;
    const seq = ++state.seq;
    if (file.size > state.maxMb * 1024 * 1024) {
      showError("File too large (" + (file.size / 1048576).toFixed(1) + " MB > " + state.maxMb + " MB).");
      return;
    }
    const prev = $("preview");
    if (prev.src) URL.revokeObjectURL(prev.src);
    prev.src = URL.createObjectURL(file);
    prev.hidden = false;
    $("drop-text").textContent = file.name + " — drop another image or click to choose";
    showAnswer(null);  // a new upload starts from a clean page, "show anyway" included
    $("status").textContent = "Analysing…";
    const t = $("token").value.trim();
    if (t) sessionStorage.setItem("pandermToken", t);
    const form = new FormData();
    form.append("image", file, file.name);
    try {
      const r = await fetch("/api/v1/predict", { method: "POST", body: form, headers: headers() });
      let body = null;
      try { body = await r.json(); } catch (e) { body = null; }
      if (seq !== state.seq) return;
      if (r.status === 401) $("token-box").hidden = false;
      if (!r.ok || !body) {
        $("status").textContent = "";
        showError((body && body.error) || ("Request failed (HTTP " + r.status + ")"));
        return;
      }
      showAnswer(body);
      $("status").textContent = "Done in " + Math.round(body.latency_ms) + " ms (" + body.image.width + "×" +
        body.image.height + ").";
    } catch (e) {
      if (seq !== state.seq) return;
      $("status").textContent = "";
      showError("Upload failed: server not reachable.");
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    const drop = $("drop");
    $("file").addEventListener("change", (e) => upload(e.target.files[0]));
    ["dragenter", "dragover"].forEach((ev) => drop.addEventListener(ev, (e) => {
      e.preventDefault(); drop.classList.add("over");
    }));
    ["dragleave", "drop"].forEach((ev) => drop.addEventListener(ev, (e) => {
      e.preventDefault(); drop.classList.remove("over");
    }));
    drop.addEventListener("drop", (e) => {
      const f = e.dataTransfer && e.dataTransfer.files[0];
      if (f) upload(f);
    });
    $("card-link").addEventListener("click", () => { $("card").open = true; });
    $("show-anyway").addEventListener("click", () => {
      state.forced = !state.forced;
      renderEstimates();
    });
    $("token").addEventListener("change", loadModel);
    loadModel();
  });
})();
