// ptdata review: the keyboard-first review page. No framework, nothing from a CDN.
// Record text is untrusted: it is only ever put into the page as text (textContent, text
// nodes), never as HTML; the page's Content-Security-Policy allows no inline script either.
(function () {
  "use strict";
  const body = document.body;
  const QUEUE = body.dataset.queue;
  const CSRF = body.dataset.csrf || "";
  const FOLD_CHARS = 1200;
  const S = {meta: null, cur: null, form: null, undo: [], focus: 0, slots: [], busy: false, lastSubmitted: null,
             started: 0, editing: false};

  // ---- DOM helpers: text only ------------------------------------------------------------
  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") e.className = v;
      else if (k === "text") e.textContent = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of kids.flat()) {
      if (c === null || c === undefined || c === false) continue;
      e.appendChild(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
    }
    return e;
  }
  const $ = (sel) => document.querySelector(sel);
  function clear(e) { while (e.firstChild) e.removeChild(e.firstChild); return e; }

  async function api(method, url, data) {
    const opts = {method, credentials: "same-origin", headers: {"Accept": "application/json"}};
    if (data !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.headers["X-CSRF-Token"] = CSRF;
      opts.body = JSON.stringify(data);
    }
    const r = await fetch(url, opts);
    let j = null;
    try { j = await r.json(); } catch (e) { j = null; }
    if (!r.ok) {
      if (r.status === 401) { window.location.href = "/login"; }
      throw new Error((j && j.error && j.error.message) || ("HTTP " + r.status));
    }
    return j;
  }
  const base = "/api/q/" + encodeURIComponent(QUEUE);

  function status(msg, kind) {
    const s = $("#status");
    s.textContent = msg || "";
    s.className = kind || "";
  }

  // ---- rendering records -----------------------------------------------------------------
  function folded(text, cls) {
    text = text || "";
    if (text.length <= FOLD_CHARS) return el("div", {class: cls}, text);
    return el("details", {class: "fold " + cls},
      el("summary", {}, text.slice(0, 300) + "…", el("span", {class: "muted"}, "  (" + text.length.toLocaleString() + " characters: f unfolds)")),
      el("div", {class: "full"}, text));
  }

  function messageView(m) {
    const head = el("div", {class: "role"}, m.role + (m.name ? " · " + m.name : "") + (m.tool_call_id ? " · result of " + m.tool_call_id : ""));
    const parts = [head];
    if (m.reasoning) {
      parts.push(el("details", {class: "reasoning"}, el("summary", {}, "reasoning (" + m.reasoning.length.toLocaleString() + " characters)"),
        el("div", {class: "full"}, m.reasoning)));
    }
    if (m.content) parts.push(folded(m.content, "content"));
    for (const c of m.tool_calls || []) {
      let args = c.arguments;
      if (typeof args !== "string") args = JSON.stringify(args, null, 2);
      parts.push(el("div", {class: "tool-call"}, el("div", {class: "role"}, "tool call" + (c.id ? " " + c.id : "") + ": " + (c.name || "")),
        el("pre", {}, args)));
    }
    return el("div", {class: "msg role-" + m.role}, parts);
  }

  function chat(msgs) { return el("div", {class: "chat"}, (msgs || []).map(messageView)); }

  function panelView(p) {
    if (!p) return null;
    const kids = [el("h3", {}, p.title)];
    if (p.facts && p.facts.length) {
      kids.push(el("table", {class: "facts"}, p.facts.map(([k, v]) =>
        el("tr", {}, el("th", {}, String(k)), el("td", {}, typeof v === "object" ? JSON.stringify(v) : String(v))))));
    }
    if (p.samples && p.samples.length) {
      kids.push(el("h4", {}, "samples (" + p.samples.length + ")"));
      p.samples.forEach((s, i) => kids.push(el("div", {class: "sample"},
        el("div", {class: "role"}, "sample " + i + (s.model ? " · " + s.model : "") +
          (s.ratings && Object.keys(s.ratings).length ? " · " + Object.entries(s.ratings).map(([k, v]) => k + " " + v).join(", ") : "")),
        folded(s.text, "content"))));
    }
    for (const it of p.interactions || []) {
      const when = it.created_at ? new Date(it.created_at * 1000).toISOString().replace("T", " ").slice(0, 19) : "";
      kids.push(el("div", {class: "interaction"},
        el("div", {class: "role"}, "interaction " + it.id + (it.model_version ? " · " + it.model_version : "") + (when ? " · " + when : "")),
        it.feedback.length ? el("ul", {class: "events"}, it.feedback.map((e) =>
          el("li", {}, el("b", {}, e.kind), ": ", typeof e.value === "string" ? e.value : JSON.stringify(e.value))))
          : el("div", {class: "muted"}, "no feedback events")));
    }
    return el("aside", {class: "panel"}, kids);
  }

  // ---- the form: slots the keyboard moves through ----------------------------------------
  function questions() { return S.meta.rubric.questions; }
  function isPair() { return S.cur && S.cur.kind === "preference"; }

  function buildSlots() {
    const slots = [];
    for (const q of questions()) {
      if (q.type === "rating") {
        if (isPair()) { slots.push({q, key: "left." + q.id}, {q, key: "right." + q.id}); }
        else slots.push({q, key: q.id});
      } else if (q.type === "choice") { if (isPair()) slots.push({q, key: "choice"}); }
      else slots.push({q, key: q.type === "labels" ? "labels." + q.id : q.type});
    }
    S.slots = slots;
  }

  function emptyForm() { return {ratings: {}, labels: {}, decision: null, note: "", correction: null, choice: null}; }
  function snapshot() { return JSON.parse(JSON.stringify(S.form)); }
  function change(fn) { S.undo.push(snapshot()); fn(); renderForm(); }

  function slotLabel(s) {
    if (s.q.type === "rating" && isPair()) return s.q.label + " · " + s.key.split(".")[0];
    return s.q.label;
  }

  function valueView(s, i) {
    const f = S.form, q = s.q;
    if (q.type === "rating") {
      const v = f.ratings[s.key];
      return el("span", {class: "scale"}, [1, 2, 3, 4, 5].map((n) =>
        el("button", {type: "button", class: "opt" + (v === n ? " on" : ""), tabindex: "-1", "data-value": n,
                      onclick: () => { S.focus = i; change(() => { f.ratings[s.key] = n; }); }}, String(n))));
    }
    if (q.type === "labels") {
      const on = f.labels[q.id] || [];
      return el("span", {class: "scale"}, q.options.map((o, j) =>
        el("button", {type: "button", class: "opt" + (on.includes(o) ? " on" : ""), tabindex: "-1",
                      onclick: () => { S.focus = i; toggleLabel(q.id, o); }}, (j + 1) + " " + o)));
    }
    if (q.type === "choice") {
      return el("span", {class: "scale"}, [["left", "← left"], ["right", "right →"], ["tie", "tie (t)"]].map(([k, t]) =>
        el("button", {type: "button", class: "opt" + (f.choice === k ? " on" : ""), tabindex: "-1", "data-value": k,
                      onclick: () => choose(k)}, t)));
    }
    if (q.type === "decision") {
      return el("span", {class: "scale"}, [["accept", "accept (a)"], ["reject", "reject (r)"]].map(([k, t]) =>
        el("button", {type: "button", class: "opt " + k + (f.decision === k ? " on" : ""), tabindex: "-1", "data-value": k,
                      onclick: () => decide(k)}, t)));
    }
    if (q.type === "note") {
      const ta = el("textarea", {id: "note-text", rows: "2", placeholder: "m: write a note (Esc leaves)"});
      ta.value = f.note || "";
      ta.addEventListener("input", () => { f.note = ta.value; });
      ta.addEventListener("focus", () => { S.undo.push(snapshot()); });
      return ta;
    }
    if (q.type === "edit") {
      return el("span", {class: "muted"}, f.correction !== null ? "edited (e to change, shown as a diff below)" :
        (isPair() ? "e: correct the side you chose" : "e: correct the answer"));
    }
    return null;
  }

  function renderForm() {
    const box = clear($("#form"));
    S.slots.forEach((s, i) => {
      box.appendChild(el("div", {class: "slot" + (i === S.focus ? " focus" : "") + (s.q.required ? " required" : ""),
                                 "data-slot": s.key},
        el("div", {class: "qrow"}, el("span", {class: "qlabel"}, slotLabel(s), s.q.required ? el("span", {class: "req"}, " *") : null),
          valueView(s, i)),
        i === S.focus && s.q.help ? el("div", {class: "help muted"}, s.q.help) : null));
    });
    renderEdit();
    const foc = box.querySelector(".slot.focus");
    if (foc && foc.scrollIntoView) foc.scrollIntoView({block: "nearest"});
  }

  // ---- an edit, with its diff against the original ---------------------------------------
  function editTarget() {
    if (!isPair()) return "answer";
    return S.form.choice === "left" || S.form.choice === "right" ? S.form.choice : null;
  }
  function original() { const t = editTarget(); return t ? (S.cur.originals[t] || "") : ""; }

  function tokens(s) { return s.match(/\s+|[^\s]+/g) || []; }
  function diff(a, b) {
    // word-level LCS; a long text falls back to lines so the table stays small
    let A = tokens(a), B = tokens(b);
    if (A.length * B.length > 4e6) { A = a.split(/(?<=\n)/); B = b.split(/(?<=\n)/); }
    if (A.length * B.length > 4e6) return [["del", a], ["ins", b]];
    const n = A.length, m = B.length, L = Array.from({length: n + 1}, () => new Uint32Array(m + 1));
    for (let i = n - 1; i >= 0; i--) for (let j = m - 1; j >= 0; j--)
      L[i][j] = A[i] === B[j] ? L[i + 1][j + 1] + 1 : Math.max(L[i + 1][j], L[i][j + 1]);
    const out = []; let i = 0, j = 0;
    const push = (k, t) => { if (out.length && out[out.length - 1][0] === k) out[out.length - 1][1] += t; else out.push([k, t]); };
    while (i < n && j < m) {
      if (A[i] === B[j]) { push("same", A[i]); i++; j++; }
      else if (L[i + 1][j] >= L[i][j + 1]) { push("del", A[i]); i++; }
      else { push("ins", B[j]); j++; }
    }
    while (i < n) push("del", A[i++]);
    while (j < m) push("ins", B[j++]);
    return out;
  }

  function renderEdit() {
    const box = clear($("#edit"));
    if (S.form.correction === null && !S.editing) return;
    const ta = el("textarea", {id: "edit-text", rows: "8"});
    ta.value = S.form.correction !== null ? S.form.correction : original();
    const d = el("div", {id: "diff", class: "diff"});
    const show = () => {
      clear(d);
      const parts = diff(original(), ta.value);
      if (parts.every((p) => p[0] === "same")) { d.appendChild(el("span", {class: "muted"}, "no change yet")); return; }
      for (const [k, t] of parts) d.appendChild(el(k === "same" ? "span" : k, {class: k}, t));
    };
    ta.addEventListener("input", () => { S.form.correction = ta.value; show(); });
    ta.addEventListener("blur", () => { S.editing = false; });
    box.appendChild(el("div", {class: "qlabel"}, "correction" + (isPair() ? " of the " + editTarget() + " side" : ""),
      el("span", {class: "muted"}, "  Esc leaves the editor; Ctrl+Enter submits")));
    box.appendChild(ta);
    box.appendChild(el("div", {class: "qlabel"}, "diff against the original"));
    box.appendChild(d);
    show();
    if (S.editing) { ta.focus(); ta.setSelectionRange(ta.value.length, ta.value.length); }
  }

  function startEdit() {
    if (!S.meta.rubric.questions.some((q) => q.type === "edit")) return status("this rubric has no edit", "warn");
    if (!editTarget()) return status("choose a side first (← or →): an edit corrects the side you chose", "warn");
    S.undo.push(snapshot());
    if (S.form.correction === null) S.form.correction = original();
    S.editing = true;
    renderForm();
  }

  // ---- actions ------------------------------------------------------------------------------
  function setRating(n) {
    const s = S.slots[S.focus];
    if (!s) return;
    const q = s.q;
    if (q.type === "rating") {
      if (n < 1 || n > 5) return;
      change(() => { S.form.ratings[s.key] = n; });
      advance(1);
    } else if (q.type === "labels") {
      if (n >= 1 && n <= q.options.length) toggleLabel(q.id, q.options[n - 1]);
    } else if (q.type === "choice") {
      if (n >= 1 && n <= 3) choose(["left", "right", "tie"][n - 1]);
    } else if (q.type === "decision") {
      if (n === 1 || n === 2) decide(n === 1 ? "accept" : "reject");
    }
  }
  function toggleLabel(id, o) {
    change(() => {
      const on = S.form.labels[id] || [];
      S.form.labels[id] = on.includes(o) ? on.filter((x) => x !== o) : on.concat([o]);
    });
  }
  function choose(k) {
    if (!isPair()) return;
    change(() => { S.form.choice = k; });
    renderSides();
  }
  function decide(k) {
    if (!questions().some((q) => q.type === "decision")) return;
    change(() => { S.form.decision = k; });
  }
  function advance(d) {
    if (!S.slots.length) return;
    S.focus = Math.max(0, Math.min(S.slots.length - 1, S.focus + d));
    renderForm();
  }
  function undo() {
    if (S.undo.length) {
      S.form = S.undo.pop();
      S.editing = false;
      renderForm();
      renderSides();
      status("undone");
      return;
    }
    if (S.lastSubmitted !== null) return retract(S.lastSubmitted);
    status("nothing to undo");
  }

  function answerBody() {
    const f = S.form;
    const b = {ratings: f.ratings, labels: f.labels, decision: f.decision, seconds: (Date.now() - S.started) / 1000};
    if (f.note && f.note.trim()) b.note = f.note;
    if (f.correction !== null && f.correction !== original()) b.correction = f.correction;
    if (isPair()) b.choice = f.choice;
    return b;
  }

  async function submit() {
    if (S.busy || !S.cur) return;
    S.busy = true;
    const pos = S.cur.pos;
    try {
      const r = await api("POST", base + "/a/" + pos, answerBody());
      S.lastSubmitted = pos;
      status("saved record " + (pos + 1), "ok");
      if (r.next === null || r.next === undefined) await finished(r);
      else await load(r.next);
    } catch (e) {
      status(e.message, "error");
    } finally { S.busy = false; }
  }

  async function retract(pos) {
    if (S.busy) return;
    S.busy = true;
    try {
      const back = await api("POST", base + "/a/" + pos + "/retract", {});
      S.lastSubmitted = null;
      const r = await api("GET", base + "/a/" + pos);
      r.answer = back.answer;  // the undone answer, to change and submit again
      show(r, true);
      status("submission of record " + (pos + 1) + " undone: it is open again", "ok");
    } catch (e) { status(e.message, "error"); } finally { S.busy = false; }
  }

  async function go(delta) {
    if (S.busy || !S.cur) return;
    const p = S.cur.pos + delta;
    if (p < 0 || p >= S.cur.total) return status(delta < 0 ? "this is the first record" : "this is the last record");
    S.busy = true;
    try { await load(p); } catch (e) { status(e.message, "error"); } finally { S.busy = false; }
  }

  // ---- loading ------------------------------------------------------------------------------
  async function load(pos) {
    const r = await api("GET", base + "/a/" + pos);
    show(r);
  }

  function show(r, fromRetract) {
    S.cur = r;
    S.undo = [];
    S.editing = false;
    S.focus = 0;
    S.started = Date.now();
    const a = r.answer;
    S.form = emptyForm();
    if (a) {
      S.form.ratings = a.ratings || {}; S.form.labels = a.labels || {}; S.form.decision = a.decision || null;
      S.form.note = a.note || ""; S.form.correction = a.correction === undefined ? null : a.correction; S.form.choice = a.choice || null;
    }
    buildSlots();
    $("#record-pos").textContent = "record " + (r.pos + 1) + " of " + r.total + (r.done ? " · answered" : "");
    $("#progress").textContent = r.done_count + " of " + r.total + " done";
    $("#record-pos").dataset.pos = String(r.pos);
    const rec = clear($("#record"));
    rec.dataset.view = r.view;
    rec.appendChild(el("div", {class: "view-title muted"}, {chat: "conversation", pair: "which answer is better?",
      distill: "distillation label", interaction: "flywheel interaction"}[r.view] || r.view));
    rec.appendChild(chat(r.messages));
    if (r.kind === "preference") {
      rec.appendChild(el("div", {class: "sides"},
        el("section", {id: "side-left", class: "side"}, el("h3", {}, "left"), chat(r.sides.left)),
        el("section", {id: "side-right", class: "side"}, el("h3", {}, "right"), chat(r.sides.right))));
    }
    const p = panelView(r.panel);
    if (p) rec.appendChild(p);
    renderForm();
    renderSides();
    if (!fromRetract) status(r.done ? "you answered this record; Enter saves a revision" : "");
    window.scrollTo(0, 0);
  }

  function renderSides() {
    for (const side of ["left", "right"]) {
      const e = document.getElementById("side-" + side);
      if (e) e.classList.toggle("picked", S.form.choice === side);
    }
  }

  async function finished(r) {
    S.cur = null;
    clear($("#record")).appendChild(el("div", {class: "done"}, "All your records in this queue are answered. ",
      el("a", {href: "/"}, "back to your queues")));
    clear($("#form"));
    clear($("#edit"));
    $("#record-pos").textContent = "done";
    $("#record-pos").dataset.pos = "";
    if (r && r.progress) $("#progress").textContent = r.progress.done + " of " + r.progress.total + " done";
  }

  // ---- the keyboard -------------------------------------------------------------------------
  const HELP = [["j / ↓", "next question"], ["k / ↑", "previous question"], ["1 – 5", "rate the focused aspect (then the next one)"],
    ["1 – 9", "toggle a label; choice: 1 left, 2 right, 3 tie; decision: 1 accept, 2 reject"],
    ["← / →", "pairs: the left or the right answer is better"], ["t", "pairs: a tie"],
    ["a / r", "accept / reject"], ["e", "edit the answer (the chosen side of a pair); a diff shows the change"],
    ["m", "write a note"], ["Esc", "leave the text box; close this help"], ["Enter", "submit, and go to the next open record"],
    ["Ctrl+Enter", "submit from inside a text box"], ["u", "undo the last change; with none, undo the last submission"],
    ["n / p", "next / previous record (without submitting)"], ["f", "fold or unfold long turns and reasoning"], ["?", "this help"]];

  function toggleHelp(force) {
    const h = $("#help");
    const open = force === undefined ? h.hidden : force;
    h.hidden = !open;
  }

  function fold() {
    const all = Array.from(document.querySelectorAll("#record details"));
    const open = !all.every((d) => d.open);
    all.forEach((d) => { d.open = open; });
  }

  document.addEventListener("keydown", (ev) => {
    const t = ev.target;
    const typing = t && (t.tagName === "TEXTAREA" || t.tagName === "INPUT");
    if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); if (typing) t.blur(); submit(); return; }
    if (typing) {
      if (ev.key === "Escape") { ev.preventDefault(); t.blur(); S.editing = false; }
      return;
    }
    if (ev.altKey || ev.ctrlKey || ev.metaKey) return;
    const k = ev.key;
    if (k === "?") { toggleHelp(); ev.preventDefault(); return; }
    if (k === "Escape") { toggleHelp(false); return; }
    if (!$("#help").hidden) return;
    if (!S.cur) return;
    let handled = true;
    if (k >= "1" && k <= "9") setRating(Number(k));
    else if (k === "j" || k === "ArrowDown") advance(1);
    else if (k === "k" || k === "ArrowUp") advance(-1);
    else if (k === "ArrowLeft") choose("left");
    else if (k === "ArrowRight") choose("right");
    else if (k === "t") choose("tie");
    else if (k === "a") decide("accept");
    else if (k === "r") decide("reject");
    else if (k === "e") startEdit();
    else if (k === "m") { const n = $("#note-text"); if (n) n.focus(); else status("this rubric has no note", "warn"); }
    else if (k === "Enter") submit();
    else if (k === "u") undo();
    else if (k === "n") go(1);
    else if (k === "p") go(-1);
    else if (k === "f") fold();
    else handled = false;
    if (handled) ev.preventDefault();
  });

  async function start() {
    const h = $("#help");
    h.appendChild(el("div", {class: "help-box"}, el("h2", {}, "Keys"),
      el("table", {}, HELP.map(([k, d]) => el("tr", {}, el("th", {}, k), el("td", {}, d)))),
      el("p", {class: "muted"}, "Every action has a key; the mouse is never needed.")));
    try {
      S.meta = await api("GET", base);
      $("#queue-name").textContent = S.meta.queue;
      const r = await api("GET", base + "/next");
      if (r.done) return finished({progress: r.progress});
      show(r);
    } catch (e) { status(e.message, "error"); }
  }
  start();
})();
