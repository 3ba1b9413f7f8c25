// Live phases: each element with data-job follows its job with UWS WAIT (the server
// answers when the phase changes: a long poll, not a polling loop). Once its job has
// ended, a job page fetches itself again and shows its new main part (results, error)
// without reloading the page.
"use strict";
const FINAL = ["COMPLETED", "ERROR", "ABORTED", "ARCHIVED"];

async function follow(element) {
  let phase = element.dataset.phase;
  while (!FINAL.includes(phase)) {
    const url = `${element.dataset.job}?WAIT=60&PHASE=${encodeURIComponent(phase)}`;
    let answer;
    try {
      answer = await fetch(url, { credentials: "same-origin" });
    } catch (error) {
      await new Promise((done) => setTimeout(done, 5000));
      continue;
    }
    if (!answer.ok) return;
    const doc = new DOMParser().parseFromString(await answer.text(), "application/xml");
    const found = doc.getElementsByTagNameNS("http://www.ivoa.net/xml/UWS/v1.0", "phase")[0];
    if (!found) return;
    phase = found.textContent;
    element.textContent = phase;
    element.className = `phase phase-${phase.toLowerCase()}`;
  }
  if (element.dataset.reload) await refresh();
}

async function refresh() {
  const answer = await fetch(window.location.href, { credentials: "same-origin" });
  if (!answer.ok) return;
  const page = new DOMParser().parseFromString(await answer.text(), "text/html");
  const fresh = page.getElementById("main");
  if (fresh) document.getElementById("main").replaceChildren(...fresh.childNodes);
}

document.querySelectorAll("[data-job]").forEach((element) => follow(element));
