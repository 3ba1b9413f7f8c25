// Live phases: each element with data-job follows its job with UWS WAIT (the server
// answers when the phase changes: a long poll, not a polling loop). A job page reloads
// once its job has ended, to show its results.
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
  if (element.dataset.reload) window.location.reload();
}

document.querySelectorAll("[data-job]").forEach((element) => follow(element));
