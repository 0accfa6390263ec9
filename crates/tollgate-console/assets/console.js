// The Console's only script: the copy button of a new key, and the Workbench's streamed
// run. Every page works without it except the Workbench, which needs it to stream.
"use strict";

document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-copy]");
  if (!button) return;
  const field = document.getElementById(button.dataset.copy);
  field.select();
  const done = () => { button.textContent = "Copied"; };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(field.value).then(done, () => { document.execCommand("copy"); done(); });
  } else {
    document.execCommand("copy");
    done();
  }
});

function workbench(form) {
  const answer = document.getElementById("wb-answer");
  const status = document.getElementById("wb-status");
  const result = document.getElementById("wb-result");
  const run = document.getElementById("wb-run");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    answer.textContent = "";
    result.textContent = "";
    status.textContent = "Running…";
    run.disabled = true;
    const data = new FormData(form);
    try {
      const response = await fetch(form.action, {
        method: "POST",
        headers: { "x-csrf-token": data.get("csrf"), "content-type": "application/x-www-form-urlencoded" },
        body: new URLSearchParams(data),
        credentials: "same-origin",
      });
      const requestId = response.headers.get("request-id");
      if (!response.ok || !response.body) {
        const text = await response.text();
        let message = text;
        try { message = JSON.parse(text).error.message; } catch (_) { /* not JSON */ }
        status.textContent = "The run failed: " + message;
        return;
      }
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      let failed = null;
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const chunk = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const dataLine = chunk.split("\n").filter((line) => line.startsWith("data:")).map((line) => line.slice(5).trim()).join("");
          if (!dataLine) continue;
          let payload;
          try { payload = JSON.parse(dataLine); } catch (_) { continue; }
          if (payload.type === "content_block_delta" && payload.delta && payload.delta.type === "text_delta") {
            answer.textContent += payload.delta.text;
          } else if (payload.type === "error") {
            failed = payload.error && payload.error.message;
          }
        }
      }
      status.textContent = failed ? "The run failed: " + failed : "Done.";
      if (requestId) {
        const summary = await fetch("/console/workbench/result/" + encodeURIComponent(requestId), { credentials: "same-origin" });
        if (summary.ok) result.innerHTML = await summary.text();
      }
    } catch (error) {
      status.textContent = "The run failed: " + error;
    } finally {
      run.disabled = false;
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("workbench");
  if (form) workbench(form);
});
