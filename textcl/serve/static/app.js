// The search page: plain DOM code, no build step. Text from the index is only ever inserted with
// textContent / text nodes (never as HTML), so a document cannot inject markup or script.
"use strict";
(() => {
  const SNIPPET_CHARS = 320;
  const $ = (id) => document.getElementById(id);
  const form = $("search-form"), box = $("q"), kSelect = $("k");
  const statusLine = $("status"), errorLine = $("error"), list = $("results");
  const forYou = $("for-you"), likedLine = $("liked"), recStatus = $("rec-status"), recList = $("recs");
  const RECS = 5, MAX_LIKED = 20; // recommendations shown; liked documents kept (the oldest are dropped)
  let latest = 0; // the newest request; older answers that arrive late are dropped
  let latestRec = 0;
  let liked = []; // liked document ids, oldest first: the history POST /recommend is given
  let shownQuery = ""; // the query of the results on show (what the address keeps: not unsent typing, not a
                       // query the server refused)
  const titles = new Map(); // document id -> its label (see label()), for the liked list and "because you liked"

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  // `text` cut at about `chars` characters, at a word when one ends past 60% of them, with "…"
  function cutAtWord(text, chars) {
    if (text.length <= chars) return text;
    let cut = text.slice(0, chars);
    const last = cut.charCodeAt(cut.length - 1);
    if (last >= 0xd800 && last <= 0xdbff) cut = cut.slice(0, -1);  // never half of a two-unit character
    const space = cut.lastIndexOf(" ");
    return (space > chars * 0.6 ? cut.slice(0, space) : cut) + "…";
  }

  function snippet(text) {
    return cutAtWord(text, SNIPPET_CHARS);
  }

  const STOPWORDS = new Set(("the and for are was were with that this from into its his her their has have had " +
    "not but who what which when where how also than then there these those").split(" "));

  // Append `text` to `parent`, wrapping whole words of the query in <mark> (as elements, not markup).
  function appendHighlighted(parent, text, query) {
    const words = [...new Set(query.toLowerCase().split(/[^\p{L}\p{N}]+/u))]
      .filter((w) => w.length > 2 && !STOPWORDS.has(w));
    if (!words.length) { parent.append(text); return; }
    const escaped = words.map((w) => w.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
    const pattern = new RegExp(`(?<![\\p{L}\\p{N}])(${escaped.join("|")})(?![\\p{L}\\p{N}])`, "giu");
    text.split(pattern).forEach((part, i) => {
      if (!part) return;
      parent.append(i % 2 === 1 ? el("mark", "", part) : document.createTextNode(part));
    });
  }

  function showValue(value) {
    return typeof value === "string" ? value : JSON.stringify(value);
  }

  // what names a document in the liked list and "because you liked": its title, else the start of its text
  // (a catalogue indexed from items.jsonl has no titles), else its id
  const LABEL_CHARS = 60;
  function label(doc) {
    if (doc.title) return doc.title;
    const text = (doc.text || "").trim();
    return text ? cutAtWord(text, LABEL_CHARS) : doc.id;
  }

  function likeButton(hit) {
    const button = el("button", "like", "♡ Like");
    button.type = "button";
    button.dataset.id = hit.id;
    button.setAttribute("aria-pressed", String(liked.includes(hit.id)));
    button.setAttribute("aria-label", `Like ${label(hit)}`);
    button.addEventListener("click", () => toggleLike(hit.id, label(hit)));
    return button;
  }

  function renderHit(hit, rank, query) {
    const item = el("li", "result");
    item.tabIndex = 0;
    const head = el("div", "result-head");
    const score = el("span", "score", hit.score.toFixed(3));
    score.title = "cosine similarity";
    head.append(el("span", "rank", `${rank}.`), el("h2", "title", hit.title || hit.id), score, likeButton(hit));
    titles.set(hit.id, label(hit));
    const text = el("p", "snippet");
    appendHighlighted(text, snippet(hit.text), query);
    const meta = el("ul", "meta");
    meta.append(el("li", "", `id: ${hit.id}`));
    for (const [key, value] of Object.entries(hit.metadata || {})) {
      meta.append(el("li", "", `${key}: ${showValue(value)}`));
    }
    item.append(head, text, meta);
    return item;
  }

  function showError(message) {
    errorLine.textContent = message;
    errorLine.hidden = false;
  }

  async function search(query, k) {
    const id = ++latest;
    errorLine.hidden = true;
    statusLine.textContent = "Searching…";
    const started = performance.now();
    let response, body = null;
    try {
      response = await fetch(`/search?q=${encodeURIComponent(query)}&k=${encodeURIComponent(k)}`,
                             { headers: { Accept: "application/json" } });
      body = await response.json().catch(() => null);
    } catch (err) {
      if (id === latest) { statusLine.textContent = ""; showError(`The server did not answer (${err.message}).`); }
      return;
    }
    if (id !== latest) return;
    const roundTrip = performance.now() - started;
    if (!response.ok || !body) {
      statusLine.textContent = "";
      showError((body && body.message) || `The server answered ${response.status}.`);
      return;
    }
    shownQuery = query;
    updateAddress();
    const hits = body.results[0].hits;
    list.replaceChildren(...hits.map((hit, i) => renderHit(hit, i + 1, query)));
    statusLine.textContent = `${hits.length} result${hits.length === 1 ? "" : "s"} · ` +
      `${body.took_ms.toFixed(1)} ms in the server, ${roundTrip.toFixed(0)} ms round trip`;
  }

  // The address holds the query, k and the liked ids, so a page with its likes is a link.
  function updateAddress() {
    const params = new URLSearchParams();
    if (shownQuery) { params.set("q", shownQuery); params.set("k", kSelect.value); }
    liked.forEach((id) => params.append("liked", id));
    history.replaceState(null, "", params.toString() ? `?${params}` : location.pathname);
  }

  function submit() {
    const query = box.value.trim();
    if (!query) { box.focus(); return; }
    search(query, kSelect.value);
  }

  // ---------------------------------------------------------------- recommendations from what was liked
  function toggleLike(id, title) {
    titles.set(id, title);
    liked = liked.includes(id) ? liked.filter((x) => x !== id) : [...liked, id].slice(-MAX_LIKED);
    document.querySelectorAll(".like").forEach((b) => b.setAttribute("aria-pressed", String(liked.includes(b.dataset.id))));
    updateAddress();
    recommend();
  }

  function renderLiked() {
    likedLine.replaceChildren();
    liked.forEach((id, i) => {
      if (i) likedLine.append(" · ");
      likedLine.append(el("strong", "", titles.get(id) || id));
    });
  }

  async function recommend() {
    const id = ++latestRec;
    forYou.hidden = liked.length === 0;
    renderLiked();
    if (!liked.length) { recList.replaceChildren(); recStatus.textContent = ""; return; }
    recStatus.textContent = "Finding recommendations…";
    let response, body = null;
    try {
      response = await fetch("/recommend", {
        method: "POST", headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify({ history: liked, k: RECS, text_chars: SNIPPET_CHARS + 1 }),
      });
      body = await response.json().catch(() => null);
    } catch (err) {
      if (id === latestRec) recStatus.textContent = `The server did not answer (${err.message}).`;
      return;
    }
    if (id !== latestRec) return;
    if (!response.ok || !body) {
      recList.replaceChildren();
      recStatus.textContent = (body && body.message) || `The server answered ${response.status}.`;
      return;
    }
    const items = body.recommendations.map((hit, i) => {
      const item = renderHit(hit, i + 1, "");
      if (hit.because) {
        const why = el("p", "because", "because you liked ");
        why.append(el("strong", "", titles.get(hit.because.id) || hit.because.id),
                   ` (cosine ${hit.because.score.toFixed(2)})`);
        item.append(why);
      }
      return item;
    });
    recList.replaceChildren(...items);
    recStatus.textContent = `${items.length} recommendation${items.length === 1 ? "" : "s"} · ` +
      `${body.took_ms.toFixed(1)} ms in the server`;
  }

  $("clear-liked").addEventListener("click", () => {
    liked = [];
    document.querySelectorAll(".like").forEach((b) => b.setAttribute("aria-pressed", "false"));
    updateAddress();
    recommend();
  });

  form.addEventListener("submit", (event) => { event.preventDefault(); submit(); });
  kSelect.addEventListener("change", () => { if (box.value.trim()) submit(); });

  // Keyboard: "/" focuses the box, arrows move through the results, Escape goes back to the box.
  document.addEventListener("keydown", (event) => {
    const results = [...list.querySelectorAll(".result")];
    const at = results.indexOf(document.activeElement);
    if (event.key === "/" && document.activeElement !== box) {
      event.preventDefault(); box.focus(); box.select();
    } else if (event.key === "ArrowDown" && (document.activeElement === box || at >= 0) && results.length) {
      event.preventDefault(); results[Math.min(at + 1, results.length - 1)].focus();
    } else if (event.key === "ArrowUp" && at >= 0) {
      event.preventDefault(); (at === 0 ? box : results[at - 1]).focus();
    } else if (event.key === "Escape" && at >= 0) {
      box.focus();
    }
  });

  fetch("/info").then((r) => (r.ok ? r.json() : null)).then((info) => {
    if (!info) return;
    const model = info.model ? info.model.split("/").slice(-2).join("/") : "unknown model";
    $("index-info").textContent =
      `${info.n_docs.toLocaleString()} documents · ${model} · ${info.factory} · ${info.dim}-d`;
  }).catch(() => {});

  const params = new URLSearchParams(location.search);
  if (params.get("k") && [...kSelect.options].some((o) => o.value === params.get("k"))) kSelect.value = params.get("k");
  liked = [...new Set(params.getAll("liked").filter((x) => x.trim()))].slice(-MAX_LIKED);
  if (liked.length) {
    // the liked documents' titles, for the list and "because you liked" (an id no longer indexed shows as itself)
    // a liked id that is not a document of the index (deleted since, or never one: a hand-made link) is dropped,
    // rather than failing every recommendation; a server error keeps it
    const gone = new Set();
    Promise.all(liked.map((id) => fetch(`/documents/${encodeURIComponent(id)}`, { headers: { Accept: "application/json" } })
      .then(async (r) => {
        const doc = r.ok ? await r.json().catch(() => null) : null;
        if (doc && doc.id === id) titles.set(id, label(doc));
        // "." and ".." cannot be looked up by address (the browser resolves them away): kept, titled by id
        else if (r.status < 500 && id !== "." && id !== "..") gone.add(id);
      })
      .catch(() => {}))).then(() => {
      if (gone.size) { liked = liked.filter((id) => !gone.has(id)); updateAddress(); }
      recommend();
    });
  }
  if (params.get("q")) { box.value = params.get("q"); submit(); }
})();
