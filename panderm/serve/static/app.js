// PanDerm serve page: upload an image, show every class's probability as a bar.
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const state = { maxMb: 10 };

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
    $("bars-hint").hidden = true;
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
    if (file.size > state.maxMb * 1024 * 1024) {
      showError("File too large (" + (file.size / 1048576).toFixed(1) + " MB > " + state.maxMb + " MB).");
      return;
    }
    const prev = $("preview");
    if (prev.src) URL.revokeObjectURL(prev.src);
    prev.src = URL.createObjectURL(file);
    prev.hidden = false;
    $("drop-text").textContent = file.name + " — drop another image or click to choose";
    $("status").textContent = "Analysing…";
    const t = $("token").value.trim();
    if (t) sessionStorage.setItem("pandermToken", t);
    const form = new FormData();
    form.append("image", file, file.name);
    try {
      const r = await fetch("/api/v1/predict", { method: "POST", body: form, headers: headers() });
      let body = null;
      try { body = await r.json(); } catch (e) { body = null; }
      if (r.status === 401) $("token-box").hidden = false;
      if (!r.ok || !body) {
        $("status").textContent = "";
        showError((body && body.error) || ("Request failed (HTTP " + r.status + ")"));
        return;
      }
      renderBars(body);
      renderNeighbours(body);
      $("status").textContent = "Done in " + Math.round(body.latency_ms) + " ms (" + body.image.width + "×" +
        body.image.height + ").";
    } catch (e) {
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
    $("token").addEventListener("change", loadModel);
    loadModel();
  });
})();
