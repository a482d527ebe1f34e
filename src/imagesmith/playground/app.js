// The imagesmith playground: the native API driven from the browser with a project key.
// Everything the server returns is shown with textContent / attributes, never as HTML.
"use strict";

const KEY_STORE = "imagesmith.apiKey";
const PAGE_SIZE = 12;
const $ = (id) => document.getElementById(id);
let galleryOffset = 0;

function apiKey() {
  return $("api-key").value.trim();
}

async function api(method, path, body) {
  const headers = { "X-API-Key": apiKey() };
  let payload;
  if (body instanceof FormData) {
    payload = body;
  } else if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  const response = await fetch(path, { method, headers, body: payload });
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch (_) {
    data = null;
  }
  if (!response.ok) {
    const message = (data && data.error && data.error.message) || text || response.statusText;
    throw new Error(`${response.status}: ${message}`);
  }
  return data;
}

function showError(error) {
  const box = $("error");
  box.textContent = error ? String(error.message || error) : "";
  box.hidden = !error;
}

function setProgress(value, text) {
  $("progress").value = value;
  $("status-text").textContent = text;
}

// Server-sent events with the key in a header (EventSource cannot send one): read the
// stream, split it into events, hand each `generation` event's data to onState.
async function watch(id, onState) {
  const response = await fetch(`/api/v1/generations/${encodeURIComponent(id)}/events`, {
    headers: { "X-API-Key": apiKey(), Accept: "text/event-stream" },
  });
  if (!response.ok || !response.body) {
    throw new Error(`events: HTTP ${response.status}`);
  }
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let last = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const data = block
        .split("\n")
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).trimStart())
        .join("\n");
      if (data) {
        last = JSON.parse(data);
        onState(last);
      }
    }
  }
  return last;
}

function describe(state) {
  if (state.status === "processing" && state.progress) {
    const { step, total } = state.progress;
    return [Math.round((100 * step) / Math.max(total, 1)), `drawing: step ${step} of ${total}`];
  }
  return [state.status === "success" ? 100 : 0, state.status];
}

async function generate(event) {
  event.preventDefault();
  showError(null);
  if (!apiKey()) {
    showError("Enter an API key first (imagesmith keys create --org ORG --project PROJECT).");
    return;
  }
  const prompt = $("prompt").value;
  const body = {
    prompt,
    aspectRatio: $("aspect-ratio").value,
    autoEnhance: $("enhance").checked,
  };
  if ($("enhance").checked) body.enhancementOptions = { template: $("template").value };
  if ($("model").value) body.model = $("model").value;
  if ($("seed").value !== "") body.seed = Number($("seed").value);
  if ($("steps").value !== "") body.steps = Number($("steps").value);
  const button = $("generate");
  button.disabled = true;
  setProgress(0, "queued");
  try {
    const created = await api("POST", "/api/v1/generations", body);
    const id = created.data.id;
    const final = await watch(id, (state) => setProgress(...describe(state)));
    const record = (await api("GET", `/api/v1/generations/${encodeURIComponent(id)}`)).data;
    if (record.status !== "success") {
      throw new Error(record.errorMessage || `the generation ended ${record.status}`);
    }
    showResult(record, prompt);
    setProgress(100, final ? `done in ${record.processingTimeMs} ms` : "done");
    await loadGallery(0);
  } catch (error) {
    setProgress(0, "");
    showError(error);
  } finally {
    button.disabled = false;
  }
}

function showResult(record, prompt) {
  const image = $("result-image");
  image.alt = prompt;
  image.src = record.outputImage.storageUrl;
  $("result-caption").textContent =
    `${record.width}×${record.height}, seed ${record.seed}, ${record.steps} steps, ${record.model}`;
  $("result").hidden = false;
}

async function loadGallery(offset) {
  if (!apiKey()) return;
  const page = await api("GET", `/api/v1/generations?limit=${PAGE_SIZE}&offset=${offset}`);
  galleryOffset = offset;
  const list = $("gallery-list");
  list.replaceChildren(...page.data.map(card));
  $("gallery-empty").hidden = page.data.length > 0;
  const { total, hasMore } = page.pagination;
  const first = total ? offset + 1 : 0;
  $("page-info").textContent = total ? `${first}–${offset + page.data.length} of ${total}` : "";
  $("newer").disabled = offset === 0;
  $("older").disabled = !hasMore;
}

function card(record) {
  const item = $("card-template").content.firstElementChild.cloneNode(true);
  item.dataset.id = record.id;
  const image = item.querySelector("img");
  if (record.outputImage) {
    // A re-drawn image keeps its URL, and the browser's image cache would show the old
    // picture: a version parameter tells them apart (not on a presigned URL: its query is
    // signed, and it changes with every answer anyway).
    const version = encodeURIComponent(record.completedAt || record.updatedAt);
    const url = record.outputImage.storageUrl;
    image.src = url.includes("?") ? url : `${url}?v=${version}`;
    image.alt = record.originalPrompt;
  } else {
    image.remove();
  }
  item.querySelector(".card-prompt").textContent = record.originalPrompt;
  item.querySelector(".card-meta").textContent =
    `${record.status} · ${record.width}×${record.height} · seed ${record.seed}`;
  const run = async (action) => {
    showError(null);
    try {
      await action();
      await loadGallery(galleryOffset);
    } catch (error) {
      showError(error);
    }
  };
  const path = `/api/v1/generations/${encodeURIComponent(record.id)}`;
  item.querySelector(".regenerate").addEventListener("click", () =>
    run(async () => {
      await api("POST", `${path}/regenerate`);
      await watch(record.id, () => {});
    }),
  );
  const form = item.querySelector(".edit-form");
  item.querySelector(".edit").addEventListener("click", () => {
    form.querySelector("textarea").value = record.originalPrompt;
    form.hidden = false;
  });
  item.querySelector(".cancel-edit").addEventListener("click", () => {
    form.hidden = true;
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    run(async () => {
      await api("PUT", path, { prompt: form.querySelector("textarea").value });
      await watch(record.id, () => {});
    });
  });
  item.querySelector(".delete").addEventListener("click", () =>
    run(() => api("DELETE", path)),
  );
  return item;
}

async function upload(event) {
  event.preventDefault();
  showError(null);
  const form = new FormData();
  form.append("file", $("upload-file").files[0]);
  const alias = $("upload-alias").value.trim();
  if (alias) form.append("alias", alias.startsWith("@") ? alias : `@${alias}`);
  try {
    const made = (await api("POST", "/api/v1/images/upload", form)).data;
    const out = $("upload-result");
    out.replaceChildren();
    const link = document.createElement("a");
    link.href = made.storageUrl;
    link.textContent = made.alias || made.id;
    out.append("Uploaded: ", link, " (use it in a prompt as its alias)");
  } catch (error) {
    showError(error);
  }
}

async function loadInfo() {
  const info = await (await fetch("/api/info")).json();
  const fill = (select, values, chosen) => {
    select.replaceChildren(
      ...values.map((value) => {
        const option = document.createElement("option");
        option.value = option.textContent = value;
        option.selected = value === chosen;
        return option;
      }),
    );
  };
  fill($("aspect-ratio"), info.limits.aspectRatios, "1:1");
  fill($("template"), info.limits.templates, "general");
  fill($("model"), info.models, info.defaultModel);
}

function init() {
  const keyInput = $("api-key");
  keyInput.value = localStorage.getItem(KEY_STORE) || "";
  keyInput.addEventListener("change", () => {
    localStorage.setItem(KEY_STORE, apiKey());
    loadGallery(0).catch(showError);
  });
  $("forget-key").addEventListener("click", () => {
    localStorage.removeItem(KEY_STORE);
    keyInput.value = "";
    $("gallery-list").replaceChildren();
  });
  $("enhance").addEventListener("change", () => {
    $("template").disabled = !$("enhance").checked;
  });
  $("generate-form").addEventListener("submit", generate);
  $("upload-form").addEventListener("submit", upload);
  $("newer").addEventListener("click", () =>
    loadGallery(Math.max(0, galleryOffset - PAGE_SIZE)).catch(showError),
  );
  $("older").addEventListener("click", () =>
    loadGallery(galleryOffset + PAGE_SIZE).catch(showError),
  );
  loadInfo().catch(showError);
  loadGallery(0).catch(showError);
}

init();
