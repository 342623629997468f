// kbindex search page: no framework, no assets from elsewhere. The query lives in the URL
// (/?q=...&collection=...) so that a search can be linked, bookmarked and reloaded.
"use strict";

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "kbindex-token"; // sessionStorage: kept for this tab only

function headers() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { Authorization: "Bearer " + token } : {};
}

async function api(path) {
  const response = await fetch(path, { headers: headers() });
  if (response.status === 401) {
    askToken();
    throw new Error("this server needs a token");
  }
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function askToken() {
  $("token").hidden = false;
  $("token-input").focus();
}

function escapeHtml(text) {
  return text.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

const STOPWORDS = new Set("a an and are as at be by do does for from how i in is it my of on or the to what when why with".split(" "));

function terms(query) {
  return (query.toLowerCase().match(/[\p{L}\p{N}][\p{L}\p{N}._-]*/gu) || []).filter((t) => !STOPWORDS.has(t));
}

// About 240 characters around the first query term, as `kbindex query` shows them.
function snippet(text, words, width = 240) {
  const flat = text.split(/\s+/).join(" ");
  if (flat.length <= width) return flat;
  const lower = flat.toLowerCase();
  const found = words.map((w) => lower.indexOf(w)).filter((i) => i >= 0);
  let start = found.length ? Math.max(0, Math.min(...found) - width / 4) : 0;
  if (start) start = flat.indexOf(" ", start) + 1 || start;
  return (start ? "…" : "") + flat.slice(start, start + width) + (start + width < flat.length ? "…" : "");
}

function highlight(text, words) {
  const html = escapeHtml(text);
  if (!words.length) return html;
  const sorted = [...words].sort((a, b) => b.length - a.length).map((w) => w.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
  const pattern = new RegExp("(?<![\\p{L}\\p{N}])(" + sorted.map(escapeHtml).join("|") + ")[\\p{L}\\p{N}]*", "giu");
  return html.replace(pattern, "<mark>$&</mark>");
}

function render(query, hits) {
  const words = terms(query);
  $("results").innerHTML = hits.map((hit) => {
    const why = [["vector", hit.vector_rank], ["keyword", hit.keyword_rank]]
      .filter(([, rank]) => rank != null).map(([name, rank]) => `${name} #${rank}`).join(" · ");
    return `<li>
      <a class="title" href="${escapeHtml(hit.url)}">${escapeHtml(hit.title || hit.source)}</a>
      ${hit.section ? `<div class="section">${escapeHtml(hit.section)}</div>` : ""}
      <p class="snippet">${highlight(snippet(hit.text, words), words)}</p>
      <div class="meta"><span class="source">${escapeHtml(hit.source)}</span>
        ${why ? ` · <span class="why" title="rank in each retriever">matched by ${why}</span>` : ""}</div>
    </li>`;
  }).join("");
}

// Shows the results of the search in the page's URL. On first load the box is filled only when
// the URL holds a query: what was typed while the page loaded is kept.
async function runSearch(fromHistory = true) {
  const params = new URLSearchParams(location.search);
  const q = params.get("q") || "";
  if (fromHistory || q) $("q").value = q;
  if (params.get("collection")) $("collection").value = params.get("collection");
  if (!q.trim()) {
    $("results").innerHTML = "";
    $("status").textContent = "";
    return;
  }
  $("status").textContent = "Searching…";
  const query = new URLSearchParams({ q, k: "10" });
  if ($("collection").value) query.set("collection", $("collection").value);
  const started = performance.now();
  try {
    const result = await api("/api/search?" + query);
    render(q, result.hits);
    const ms = Math.round(performance.now() - started);
    $("status").textContent = result.hits.length ? `${result.hits.length} results (${ms} ms)` : "No results.";
  } catch (err) {
    $("results").innerHTML = "";
    $("status").textContent = err.message;
  }
}

async function loadCollections() {
  const params = new URLSearchParams(location.search);
  try {
    const rows = await api("/api/collections");
    $("collection").innerHTML = rows.map((c) =>
      `<option value="${escapeHtml(c.collection)}"${c.default ? " selected" : ""}>${escapeHtml(c.collection)} (${c.chunks})</option>`).join("");
    if (params.get("collection")) $("collection").value = params.get("collection");
    $("collection").hidden = rows.length < 2;
    return true;
  } catch (err) {
    $("status").textContent = err.message;
    return false;
  }
}

// The collection list, once loaded (a search typed before it arrives waits for it, so that its
// URL names the collection like any other).
let collectionsReady = Promise.resolve(false);

$("search").addEventListener("submit", async (event) => {
  event.preventDefault();
  await collectionsReady;
  const params = new URLSearchParams({ q: $("q").value });
  if ($("collection").value) params.set("collection", $("collection").value);
  history.pushState(null, "", "/?" + params);
  runSearch(true);
});

$("collection").addEventListener("change", () => {
  if ($("q").value.trim()) $("search").requestSubmit();
});

$("token").addEventListener("submit", async (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("token-input").value.trim());
  $("token").hidden = true;
  collectionsReady = loadCollections();
  if (await collectionsReady) {
    $("q").focus();
    runSearch(false);
  }
});

window.addEventListener("popstate", () => runSearch(true));

(async () => {
  $("q").focus();
  collectionsReady = loadCollections();
  if (await collectionsReady) runSearch(false);
})();
